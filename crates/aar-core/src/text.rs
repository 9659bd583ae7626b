//! Agent-written text is data: checks on the way in, escaping on the way out.
//!
//! Agents are adversaries, and what they write (post titles, method names,
//! snapshot messages, agent names) ends up in reports, terminals and other
//! agents' prompts. Two kinds of characters make text mean something other
//! than what it shows:
//! - **control characters** (Unicode category Cc: C0, DEL and C1): `\r`
//!   rewrites a terminal line, ESC starts an ANSI sequence, `\n` starts a new
//!   Markdown table row;
//! - **invisible format characters** (category Cf, plus the line and
//!   paragraph separators and the Hangul fillers): bidirectional overrides
//!   such as U+202E make `txt.exe` display as `exe.txt`, zero-width
//!   characters make two different names look equal.
//!
//! [`check_agent_text`] refuses both at the server's door (a newline and a
//! tab only where a field is multi-line). [`markdown_cell`] and
//! [`terminal_line`] make any text, checked or not, inert where it is pasted.

use std::fmt;

/// Why a text was refused: the first forbidden character and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{} at character {position} ({})", code_point(*.character), kind(*.character))]
pub struct TextError {
    /// The forbidden character.
    pub character: char,
    /// Its position, counted in characters from 1.
    pub position: usize,
}

/// `U+202E`-style name of a character.
fn code_point(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

fn kind(c: char) -> &'static str {
    if c.is_control() {
        "a control character"
    } else {
        "an invisible formatting character"
    }
}

/// Unicode 16 general category Cf (format), as inclusive ranges.
const FORMAT: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// Characters that are not Cf but are just as invisible or line-breaking:
/// the line and paragraph separators (Zl, Zp) and the Hangul fillers.
const INVISIBLE: &[char] = &[
    '\u{2028}', '\u{2029}', '\u{115F}', '\u{1160}', '\u{3164}', '\u{FFA0}',
];

/// Whether `c` is an invisible format character (see the module docs).
pub fn is_format_char(c: char) -> bool {
    INVISIBLE.contains(&c) || FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Whether `c` may never appear in agent-written text: a control character
/// (other than the newline and tab of multi-line text) or a format character.
fn forbidden(c: char, multiline: bool) -> bool {
    if multiline && (c == '\n' || c == '\t') {
        return false;
    }
    c.is_control() || is_format_char(c)
}

/// Refuses agent-written text holding a control character (C0, DEL, C1;
/// `\n` and `\t` are allowed when `multiline`) or an invisible format
/// character (bidirectional controls, zero-width characters, category Cf).
/// The error names the first such character and its position.
pub fn check_agent_text(text: &str, multiline: bool) -> Result<(), TextError> {
    match text
        .chars()
        .enumerate()
        .find(|&(_, c)| forbidden(c, multiline))
    {
        Some((index, character)) => Err(TextError {
            character,
            position: index + 1,
        }),
        None => Ok(()),
    }
}

/// `\u{1b}`: how an escaped character is shown.
struct Escaped(char);

impl fmt::Display for Escaped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\\u{{{:x}}}", u32::from(self.0))
    }
}

/// Text made safe to paste into a Markdown table cell, heading or list item:
/// newlines and tabs become spaces (no new row or item), the characters
/// Markdown gives meaning to (`\ | ` * _ [ ] < > # &`) are backslash-escaped
/// (no new cell, code span, emphasis, link, HTML tag, heading or entity),
/// and any other control or format character is shown as `\u{..}`.
pub fn markdown_cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            '\\' | '|' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '&' => {
                out.push('\\');
                out.push(c);
            }
            c if forbidden(c, false) => out += &Escaped(c).to_string(),
            c => out.push(c),
        }
    }
    out
}

/// Text made safe to print on one terminal line: every control character
/// (newlines and ESC included, so no ANSI sequence reaches the terminal)
/// and every format character is shown as `\u{..}`.
pub fn terminal_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if forbidden(c, false) {
            out += &Escaped(c).to_string();
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_passes_and_multiline_allows_newlines_and_tabs() {
        assert_eq!(
            check_agent_text("LoRA r=8, lr 1e-4 (ünïcödé, 中文, ✓)", false),
            Ok(())
        );
        assert_eq!(check_agent_text("line one\n\tline two", true), Ok(()));
        assert_eq!(
            check_agent_text("line one\nline two", false),
            Err(TextError {
                character: '\n',
                position: 9
            })
        );
    }

    #[test]
    fn controls_and_invisible_formatting_are_refused_and_named() {
        let cases = [
            ("\r", true),
            ("\u{1b}[31m", true),
            ("\u{7f}", true),
            ("\u{85}", true),
            ("\u{9b}", true),
            ("\u{0}", true),
            ("\u{61C}", false),
            ("\u{200B}", false),
            ("\u{200F}", false),
            ("\u{202A}", false),
            ("\u{202E}", false),
            ("\u{2060}", false),
            ("\u{2064}", false),
            ("\u{2066}", false),
            ("\u{2069}", false),
            ("\u{FEFF}", false),
            ("\u{AD}", false),
            ("\u{E0041}", false),
            ("\u{2028}", false),
        ];
        for (bad, is_control) in cases {
            let text = format!("abc{bad}def");
            let err = check_agent_text(&text, true).expect_err(&format!("{bad:?} passed"));
            assert_eq!(err.position, 4, "{bad:?}");
            assert_eq!(err.character.is_control(), is_control, "{bad:?}");
        }
        let err = check_agent_text("report.\u{202E}fdp.exe", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "U+202E at character 8 (an invisible formatting character)"
        );
    }

    /// A pipe that is not preceded by a backslash would start a new cell.
    fn has_bare_pipe(cell: &str) -> bool {
        let mut escaped = false;
        for c in cell.chars() {
            if c == '|' && !escaped {
                return true;
            }
            escaped = c == '\\' && !escaped;
        }
        false
    }

    #[test]
    fn a_markdown_cell_cannot_start_a_row_or_a_cell() {
        let attacks = [
            "x | 1.00 |\n| forged | 9.99 |",
            "x \\| 1.00 \\|\r\n| forged |",
            "\\\\|`code|`",
            "tab\there|\u{2028}| row",
            "\u{202E}desrever | <b>bold</b> [link](http://x) # not a heading &#124;",
        ];
        for attack in attacks {
            let cell = markdown_cell(attack);
            assert!(!cell.contains('\n') && !cell.contains('\r'), "{cell:?}");
            assert!(!has_bare_pipe(&cell), "{attack:?} gave {cell:?}");
            assert!(cell.chars().all(|c| !forbidden(c, false)), "{cell:?}");
            // Every Markdown-active character is escaped.
            for active in ['`', '<', '>', '[', ']', '#', '&', '*', '_'] {
                for (i, c) in cell.char_indices() {
                    if c == active {
                        assert!(cell[..i].ends_with('\\'), "{active} unescaped in {cell:?}");
                    }
                }
            }
        }
        assert_eq!(
            markdown_cell("x | 1.00 |\n| forged | 9.99 |"),
            "x \\| 1.00 \\| \\| forged \\| 9.99 \\|"
        );
        assert_eq!(markdown_cell("a\u{202E}b"), "a\\u{202e}b");
        assert_eq!(markdown_cell("plain name-1.0"), "plain name-1.0");
    }

    #[test]
    fn a_terminal_line_carries_no_escape_sequence() {
        let line = terminal_line("ok\u{1b}[2J\u{1b}]0;pwned\u{7}\r\nnext\u{202E}");
        assert_eq!(
            line,
            "ok\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\u{d}\\u{a}next\\u{202e}"
        );
        assert!(line.chars().all(|c| !c.is_control() && !is_format_char(c)));
    }
}
