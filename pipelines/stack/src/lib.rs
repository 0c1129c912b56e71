//! The composition root: the pipelines this stack runs, one line each. The first is the
//! stack's default (what a start that names no pipeline runs). The Lambda bootstrap, the
//! API, the local runtime and the template generator all take the stack from here.

use std::sync::OnceLock;

use shepherd::stack::{Stack, StackBuilder};

/// The stack's pipelines, not yet checked (a test may add a fixture's before building).
pub fn pipelines() -> StackBuilder {
    [
        content_pipeline::spec(),
        coding_pipeline::spec(),
        // + your pipeline here (docs/your-pipeline.md)
    ]
    .into_iter()
    .fold(Stack::builder(), StackBuilder::pipeline)
}

/// The stack, built and checked once per process. A stack that cannot be built is a bug the
/// unit test below catches before any deploy.
pub fn stack() -> Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK
        .get_or_init(|| {
            pipelines()
                .build()
                .unwrap_or_else(|e| panic!("the stack's pipelines: {e}"))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_builds_and_every_contract_compiles() {
        let stack = pipelines().build().unwrap();
        stack.check_contracts().unwrap();
        let p = stack.pipelines();
        let content = p.latest(None).unwrap();
        assert_eq!(content.name(), "content");
        assert_eq!(
            content.definition.phase_names(),
            ["brief", "script", "assets", "voice", "publish"]
        );
        assert_eq!(content.gates(), (vec![], Some("publish".to_string())));
        let coding = p.latest(Some("coding")).unwrap();
        assert_eq!(
            coding.definition.phase_names(),
            ["plan", "implement", "pull_request"]
        );
        assert_eq!(coding.gates(), (vec!["plan".to_string()], None));
        let unknown = p.latest(Some("nope")).unwrap_err();
        assert!(
            unknown.contains("this stack runs coding, content"),
            "{unknown}"
        );
        for phase in stack.phase_names() {
            assert_eq!(stack.phase(phase).unwrap().name(), phase);
        }
    }
}
