//! Text for messages: the end of a log, without the terminal's escape sequences, and what a
//! guest wrote made safe to show.

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

/// How much of a guest's text a message shows: its start and its end, this much of each.
const SHOWN_EACH_END: usize = 8 * 1024;

/// A text the guest controls (a command's stderr, a panic message), fit for a message on a
/// terminal: colours removed, every other control character but newline and tab shown as an
/// escape (`\u{1b}`), and no more than its first and last 8 KiB.
pub fn shown(text: &str) -> String {
    let plain = strip_ansi(text);
    let mut out = String::with_capacity(plain.len().min(4 * SHOWN_EACH_END));
    let escaped = |c: char| -> String {
        if c.is_control() && c != '\n' && c != '\t' {
            c.escape_default().collect()
        } else {
            c.to_string()
        }
    };
    if plain.len() <= 2 * SHOWN_EACH_END {
        plain.chars().for_each(|c| out.push_str(&escaped(c)));
        return out;
    }
    let head_end = floor_boundary(&plain, SHOWN_EACH_END);
    let tail_start = floor_boundary(&plain, plain.len() - SHOWN_EACH_END);
    plain[..head_end]
        .chars()
        .for_each(|c| out.push_str(&escaped(c)));
    out.push_str(&format!(
        "\n[... {} bytes not shown ...]\n",
        tail_start - head_end
    ));
    plain[tail_start..]
        .chars()
        .for_each(|c| out.push_str(&escaped(c)));
    out
}

/// The largest char boundary of `text` at or below `at`.
fn floor_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len()))
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_without_colours() {
        assert_eq!(tail("a\nb\n\u{1b}[0;32mc\u{1b}[0m\n", 2), "b\nc");
    }

    #[test]
    fn guest_text_is_escaped_and_bounded() {
        assert_eq!(shown("ok\n\tdone"), "ok\n\tdone");
        assert_eq!(
            shown("a\u{7}b\u{1b}]0;title\u{7}"),
            "a\\u{7}b]0;title\\u{7}"
        );
        let big = "x".repeat(1 << 20);
        let s = shown(&big);
        assert!(s.len() < 3 * SHOWN_EACH_END, "{}", s.len());
        assert!(s.contains("bytes not shown"));
        let wide = "é".repeat(20_000);
        assert!(shown(&wide).contains("bytes not shown"));
    }
}
