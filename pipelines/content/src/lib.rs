//! The content pipeline (`v1.json`): brief -> script -> assets -> voice -> publish, each
//! phase calling an OpenAI-compatible provider (chat, images, speech), publish optionally
//! an MCP server. The stack registers it with [`spec`].

use serde::{Deserialize, Serialize};
use shepherd::prelude::*;

/// The pipeline as the stack registers it: its definitions and its phases' code.
pub fn spec() -> PipelineSpec {
    PipelineSpec::new()
        .definition("pipelines/content/v1.json", include_str!("../v1.json"))
        .phase(BriefPhase)
        .phase(Script)
        .phase(Assets)
        .phase(Voice)
        .phase(Publish)
}

const CHAT_MODEL: &str = "gpt-4o-mini";
const IMAGE_MODEL: &str = "gpt-image-1";
/// OpenAI's moderation model that takes images.
const MODERATION_MODEL: &str = "omni-moderation-latest";
const SPEECH_MODEL: &str = "gpt-4o-mini-tts";

/// The content pipeline's input (`pipelines/content/v1.json` is its schema, which fills in
/// the defaults): what a team asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Brief {
    pub title: String,
    pub topic: String,
    pub audience: String,
    pub tone: String,
    pub scenes: u32,
    pub voice: String,
    pub language: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub title: String,
    pub scenes: Vec<PlannedScene>,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedScene {
    pub n: u32,
    pub description: String,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScriptOut {
    pub scenes: Vec<ScriptScene>,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScriptScene {
    pub n: u32,
    pub narration: String,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssetsOut {
    pub images: Vec<SceneImage>,
    /// `scene <n>: <flag>`: publish waits until an operator acknowledges them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SceneImage {
    pub scene: u32,
    /// Kept in the artifact bucket.
    pub image: Artifact,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VoiceOut {
    pub audio: Vec<SceneAudio>,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SceneAudio {
    pub scene: u32,
    /// Kept in the artifact bucket.
    pub audio: Artifact,
    pub format: String,
}

fn json_chat(system: String, user: String) -> ChatRequest {
    ChatRequest {
        model: CHAT_MODEL.into(),
        messages: vec![ChatMessage::system(system), ChatMessage::user(user)],
        response_format: Some(serde_json::json!({"type": "json_object"})),
    }
}

impl PhaseOutput for Plan {}
impl PhaseOutput for ScriptOut {}
impl PhaseOutput for VoiceOut {}
impl PhaseOutput for PublishOut {}
impl PhaseOutput for AssetsOut {
    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}

/// What publish produced: the manifest, and where it was published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishOut {
    pub title: String,
    pub description: String,
    pub scenes: Vec<serde_json::Value>,
    pub published: Option<serde_json::Value>,
}

/// Turns the brief into a plan of exactly `brief.scenes` scenes.
pub struct BriefPhase;

impl Phase for BriefPhase {
    const NAME: &'static str = "brief";
    type Output = Plan;

    async fn run(&self, ctx: &PhaseContext) -> Result<Self::Output, StepError> {
        let b: Brief = ctx.input_as()?;
        let req = json_chat(
            format!(
                "task=plan scenes={}. You plan short videos. Answer with JSON \
                     {{\"title\": string, \"scenes\": [{{\"n\": number, \"description\": string}}]}}.",
                b.scenes
            ),
            format!(
                "Title: {}\nTopic: {}\nAudience: {}\nTone: {}\nLanguage: {}{}",
                b.title,
                b.topic,
                b.audience,
                b.tone,
                b.language,
                ctx.feedback_line()
            ),
        );
        // An answer with another number of scenes is rejected and asked for afresh.
        let want = b.scenes as usize;
        ctx.tools
            .chat_as("plan", &req, |plan: &Plan| match plan.scenes.len() {
                n if n == want => Ok(()),
                n => Err(format!("planned {n} of {want} scenes")),
            })
            .await
    }
}

/// Writes the narration of every planned scene.
pub struct Script;

impl Phase for Script {
    const NAME: &'static str = "script";
    type Output = ScriptOut;

    async fn run(&self, ctx: &PhaseContext) -> Result<Self::Output, StepError> {
        let b: Brief = ctx.input_as()?;
        let plan = ctx.output::<BriefPhase>()?;
        let scenes = plan
            .scenes
            .iter()
            .map(|s| format!("{}. {}", s.n, s.description))
            .collect::<Vec<_>>()
            .join("\n");
        let req = json_chat(
            format!(
                "task=script scenes={}. Write one narration per scene, tone {}, language {}. \
                     Answer with JSON {{\"scenes\": [{{\"n\": number, \"narration\": string}}]}}.",
                plan.scenes.len(),
                b.tone,
                b.language
            ),
            format!("{}\n{scenes}{}", plan.title, ctx.feedback_line()),
        );
        // Every planned scene needs a narration; an answer without one is asked for afresh.
        ctx.tools
            .chat_as("script", &req, |script: &ScriptOut| {
                for s in &plan.scenes {
                    let told = script
                        .scenes
                        .iter()
                        .any(|x| x.n == s.n && !x.narration.trim().is_empty());
                    if !told {
                        return Err(format!("scene {} has no narration", s.n));
                    }
                }
                Ok(())
            })
            .await
    }
}

/// One image per planned scene; each scene is its own idempotent call. Output contract:
/// an image for every planned scene, or the phase fails (`assets_incomplete`) here rather
/// than stalling publish later. Images' warning flags are passed on, and where the stack
/// moderates images, each image's moderation flags too.
pub struct Assets;

impl Phase for Assets {
    const NAME: &'static str = "assets";
    type Output = AssetsOut;

    async fn run(&self, ctx: &PhaseContext) -> Result<Self::Output, StepError> {
        let b: Brief = ctx.input_as()?;
        let plan = ctx.output::<BriefPhase>()?;
        let mut images = Vec::with_capacity(plan.scenes.len());
        let mut warnings = Vec::new();
        let mut missing = Vec::new();
        // Every scene's image at once, up to the definition's `parallel_calls`.
        let made = ctx
            .concurrently(0..plan.scenes.len(), |i| {
                let s = &plan.scenes[i];
                let req = ImageRequest {
                    model: IMAGE_MODEL.into(),
                    prompt: format!(
                        "{} — {} (for {}){}",
                        plan.title,
                        s.description,
                        b.audience,
                        ctx.feedback_line()
                    ),
                    n: 1,
                    size: "1024x1024".into(),
                    output_format: Some("png".into()),
                };
                async move { (i, ctx.tools.image(&format!("scene-{}", s.n), &req).await) }
            })
            .await;
        for (i, made) in made {
            let s = &plan.scenes[i];
            let img = match made {
                Ok(img) => img,
                // Not recorded as done: a retry asks again for this scene only.
                Err(e) if e.code == ErrorCode::ProviderNoImage => {
                    missing.push(s.n.to_string());
                    continue;
                }
                Err(e) => return Err(e),
            };
            warnings.extend(img.warnings.iter().map(|w| format!("scene {}: {w}", s.n)));
            images.push(SceneImage {
                scene: s.n,
                image: img.artifact,
            });
        }
        if !missing.is_empty() {
            return Err(StepError::permanent(
                "assets_incomplete",
                format!(
                    "{} of {} scenes have an image (none for scene {})",
                    images.len(),
                    plan.scenes.len(),
                    missing.join(", ")
                ),
            ));
        }
        // Where the stack moderates images (an integration serving `moderation`), each
        // image's scores over the thresholds are warnings too: OpenAI's images carry none.
        if ctx.tools.serves(CallKind::Moderation).await? {
            let checked = ctx
                .concurrently(0..images.len(), |n| {
                    let i = &images[n];
                    async move {
                        let name = format!("scene-{}-moderation", i.scene);
                        let flags = ctx
                            .tools
                            .moderate_image(&name, MODERATION_MODEL, &i.image)
                            .await;
                        (i.scene, flags)
                    }
                })
                .await;
            for (scene, flags) in checked {
                warnings.extend(flags?.iter().map(|f| format!("scene {scene}: {f}")));
            }
        }
        Ok(AssetsOut { images, warnings })
    }
}

/// Speaks every scene's narration in the brief's voice.
pub struct Voice;

impl Phase for Voice {
    const NAME: &'static str = "voice";
    type Output = VoiceOut;

    async fn run(&self, ctx: &PhaseContext) -> Result<Self::Output, StepError> {
        let b: Brief = ctx.input_as()?;
        let script = ctx.output::<Script>()?;
        let mut audio = Vec::with_capacity(script.scenes.len());
        // Every scene's narration at once, up to the definition's `parallel_calls`.
        let spoken = ctx
            .concurrently(0..script.scenes.len(), |i| {
                let s = &script.scenes[i];
                let req = SpeechRequest {
                    model: SPEECH_MODEL.into(),
                    input: s.narration.clone(),
                    voice: b.voice.clone(),
                    response_format: "mp3".into(),
                };
                async move { (i, ctx.tools.speech(&format!("scene-{}", s.n), &req).await) }
            })
            .await;
        for (i, r) in spoken {
            let s = &script.scenes[i];
            let r = r?;
            audio.push(SceneAudio {
                scene: s.n,
                audio: r.artifact,
                format: r.format,
            });
        }
        Ok(VoiceOut { audio })
    }
}

/// Assembles the manifest a publisher needs and writes its description; when the stack has
/// a publishing platform (an MCP integration), publishes it there with `publish_video`.
pub struct Publish;

impl Phase for Publish {
    const NAME: &'static str = "publish";
    type Output = PublishOut;

    async fn run(&self, ctx: &PhaseContext) -> Result<Self::Output, StepError> {
        let b: Brief = ctx.input_as()?;
        let plan = ctx.output::<BriefPhase>()?;
        let script = ctx.output::<Script>()?;
        let assets = ctx.output::<Assets>()?;
        let voice = ctx.output::<Voice>()?;
        let req = json_chat(
            "task=publish. Write a description for a video. Answer with JSON \
                 {\"description\": string}."
                .into(),
            format!("{}: {}", plan.title, b.topic),
        );
        #[derive(Deserialize)]
        struct Description {
            description: String,
        }
        let d: Description = ctx
            .tools
            .chat_as("description", &req, |_: &Description| Ok(()))
            .await?;
        let mut scenes = Vec::new();
        for s in &plan.scenes {
            let narration = script.scenes.iter().find(|x| x.n == s.n);
            let image = assets.images.iter().find(|x| x.scene == s.n);
            let audio = voice.audio.iter().find(|x| x.scene == s.n);
            let (Some(narration), Some(image), Some(audio)) = (narration, image, audio) else {
                return Err(StepError::permanent(
                    "manifest_incomplete",
                    format!("scene {} lacks narration, image or audio", s.n),
                ));
            };
            scenes.push(serde_json::json!({
                "n": s.n,
                "narration": narration.narration,
                "image": image.image.key,
                "image_sha256": image.image.sha256,
                "audio": audio.audio.key,
                "audio_sha256": audio.audio.sha256,
            }));
        }
        let published = if ctx.tools.serves(CallKind::Mcp).await? {
            let args = serde_json::json!({
                "title": plan.title,
                "description": d.description,
                "scenes": scenes.len(),
            });
            Some(ctx.tools.mcp("publish", "publish_video", &args).await?)
        } else {
            None
        };
        // Whoever listens is told by the production.completed event (the publish webhook
        // is a subscription): a receiver's outage no longer fails the production.
        Ok(PublishOut {
            title: plan.title,
            description: d.description,
            scenes,
            published,
        })
    }
}
