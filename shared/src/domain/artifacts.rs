//! Artifacts: what phases make beyond JSON (images, audio, outputs too large for the state
//! table), kept in the stack's bucket. Keys are content addresses within a production,
//! `productions/<id>/<sha256>.<ext>`: the same content is one object however often a
//! phase re-runs, and a key never names two contents.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One stored artifact, as outputs and tool outcomes reference it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// What it is within its phase (`scene-2`, `output`).
    pub name: String,
    /// The object's key in the stack's artifact bucket.
    pub key: String,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    pub bytes: u64,
    pub content_type: String,
}

impl Artifact {
    /// The artifact `body` of `production` is stored as.
    pub fn of(production: &str, name: &str, body: &[u8], content_type: &str) -> Self {
        let sha256 = hex::encode(Sha256::digest(body));
        Self {
            name: name.into(),
            key: format!(
                "productions/{production}/{sha256}.{}",
                extension(content_type)
            ),
            sha256,
            bytes: body.len() as u64,
            content_type: content_type.into(),
        }
    }

    /// A file name for a download: `<name>.<ext>`.
    pub fn file_name(&self) -> String {
        let safe: String = self
            .name
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
                _ => '_',
            })
            .collect();
        format!("{safe}.{}", extension(&self.content_type))
    }
}

/// The file extension of a media type (`bin` for one we do not know).
pub fn extension(content_type: &str) -> &'static str {
    let base = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match base.as_str() {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/opus" | "audio/ogg" => "opus",
        "audio/aac" => "aac",
        "audio/flac" => "flac",
        "audio/wav" | "audio/x-wav" | "audio/wave" => "wav",
        "audio/pcm" | "audio/l16" => "pcm",
        "application/json" => "json",
        _ => "bin",
    }
}

/// The media type of a speech `response_format` (OpenAI's names).
pub fn audio_type(format: &str) -> &'static str {
    match format {
        "opus" => "audio/opus",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "pcm" => "audio/pcm",
        _ => "audio/mpeg",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_content_address_within_the_production() {
        let a = Artifact::of("p1", "scene-1", b"abc", "image/png");
        assert_eq!(
            a.key,
            "productions/p1/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.png"
        );
        assert_eq!((a.bytes, a.file_name()), (3, "scene-1.png".to_string()));
        let same = Artifact::of("p1", "scene-4", b"abc", "image/png");
        assert_eq!(a.key, same.key, "the same content is one object");
        assert_ne!(
            a.key,
            Artifact::of("p2", "scene-1", b"abc", "image/png").key
        );
        assert_eq!(extension("audio/mpeg"), "mp3");
        assert_eq!(extension("application/octet-stream"), "bin");
        assert_eq!(
            Artifact::of("p", "../x", b"", "audio/wav").file_name(),
            "___x.wav"
        );
    }
}
