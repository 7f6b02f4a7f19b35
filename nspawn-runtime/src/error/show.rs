//! How the errors show what programs printed.

/// A program's output or a log's tail, indented under the message.
pub(super) fn tail_block(tail: &str) -> String {
    let tail = crate::text::shown(tail);
    let tail = tail.trim_end();
    if tail.is_empty() {
        String::new()
    } else {
        let indented: Vec<String> = tail.lines().map(|l| format!("    {l}")).collect();
        format!("\n{}", indented.join("\n"))
    }
}
