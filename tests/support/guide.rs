/// The fenced code block right after `<!-- guide:<name> -->` in a guide's text (also
/// included by `tests/build.rs`, which compiles the guide's stack line into the tests).
pub fn block(text: &str, name: &str) -> Option<String> {
    let marker = format!("<!-- guide:{name} -->");
    let after = &text[text.find(&marker)? + marker.len()..];
    let open = after.find("```")?;
    let body = &after[open..];
    let body = &body[body.find('\n')? + 1..];
    Some(body[..body.find("\n```")?].to_string() + "\n")
}
