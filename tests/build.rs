//! Writes the guide's composition line (docs/your-pipeline.md, `<!-- guide:stack-line -->`)
//! into `$OUT_DIR/guide_stack.rs`, so the guide's test builds the stack with exactly the
//! line the guide tells a team to add.

include!("support/guide.rs");

fn main() {
    let guide = "../docs/your-pipeline.md";
    println!("cargo:rerun-if-changed={guide}");
    let text = std::fs::read_to_string(guide).expect("docs/your-pipeline.md exists");
    let line = block(&text, "stack-line").expect("the guide has a <!-- guide:stack-line --> block");
    let code = format!(
        "/// The pipelines the guide's line adds to the stack's list.\n\
         pub fn guides_specs() -> Vec<shepherd::stack::PipelineSpec> {{\n    vec![\n{line}    ]\n}}\n"
    );
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("guide_stack.rs"), code).expect("OUT_DIR is writable");
}
