//! Text for messages: the end of a log, without the terminal's escape sequences.

/// The last `n` lines of a text, without terminal escape sequences.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    strip_ansi(&lines[start..].join("\n"))
}

/// Removes terminal colour and cursor sequences (systemd colours its console).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_without_colours() {
        assert_eq!(tail("a\nb\n\u{1b}[0;32mc\u{1b}[0m\n", 2), "b\nc");
    }
}
