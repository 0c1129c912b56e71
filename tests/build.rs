//! Writes the phase code of docs/your-pipeline.md to `$OUT_DIR/guide_phase.rs`, so the
//! guide's test compiles exactly what the guide tells a team to write.

include!("support/guide.rs");

fn main() {
    let guide = "../docs/your-pipeline.md";
    println!("cargo:rerun-if-changed={guide}");
    let text = std::fs::read_to_string(guide).expect("docs/your-pipeline.md exists");
    let code = block(&text, "phase").expect("the guide has a <!-- guide:phase --> code block");
    // The file's own doc comment (`//!`) cannot stand inside the module it is included in.
    let code: String = code
        .lines()
        .map(|l| {
            l.strip_prefix("//!")
                .map_or(l.to_string(), |rest| format!("//{rest}"))
                + "\n"
        })
        .collect();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("guide_phase.rs"), code).expect("OUT_DIR is writable");
}
