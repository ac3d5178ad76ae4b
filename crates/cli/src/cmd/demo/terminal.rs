//! What the demo's output goes to: how wide, whether it can be redrawn in
//! place, whether colour helps. Text stays readable without either.

use std::io::IsTerminal;

#[derive(Clone, Copy, Debug)]
pub struct Terminal {
    /// Columns a line may use (never wider than 100: long lines read badly).
    pub width: usize,
    /// Whether lines can be redrawn in place (a terminal, not a file or pipe).
    pub live: bool,
    pub colour: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colour {
    Good,
    Busy,
    Bad,
}

impl Terminal {
    pub fn detect() -> Terminal {
        let live = std::io::stdout().is_terminal();
        let width = console::Term::stdout()
            .size_checked()
            .map(|(_rows, columns)| columns as usize)
            .or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
            .unwrap_or(80);
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Terminal {
            width: width.clamp(30, 100),
            live: live && !dumb,
            colour: live && !dumb && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// Plain text for tests: no colour, not live.
    #[cfg(test)]
    pub fn plain(width: usize) -> Terminal {
        Terminal {
            width,
            live: false,
            colour: false,
        }
    }

    pub fn paint(&self, text: &str, colour: Colour) -> String {
        if !self.colour {
            return text.to_string();
        }
        let code = match colour {
            Colour::Good => "32",
            Colour::Busy => "33",
            Colour::Bad => "31",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// `text` cut to `width` characters, with `~` marking the cut.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('~');
    cut
}

/// `text` broken at spaces into lines of at most `width` characters, the
/// first starting with `first`, the others with as many spaces.
pub fn wrap(first: &str, text: &str, width: usize) -> Vec<String> {
    let indent = " ".repeat(first.chars().count());
    let room = width.saturating_sub(indent.len()).max(10);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let needed = line.chars().count() + usize::from(!line.is_empty()) + word.chars().count();
        if !line.is_empty() && needed > room {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let start = if i == 0 { first } else { &indent };
            fit(&format!("{start}{l}"), width)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_wraps_under_its_first_words() {
        let lines = wrap(
            "  +1.2 s  db2 ",
            "promoted: the primary db1 stopped answering",
            30,
        );
        assert_eq!(
            lines,
            [
                "  +1.2 s  db2 promoted: the",
                "              primary db1",
                "              stopped",
                "              answering"
            ]
        );
        assert!(lines.iter().all(|l| l.chars().count() <= 30));
    }

    #[test]
    fn a_word_longer_than_the_line_is_cut_not_overflowed() {
        let lines = wrap("> ", &"x".repeat(50), 20);
        assert_eq!(lines, [format!("> {}~", "x".repeat(17))]);
    }

    #[test]
    fn fit_marks_the_cut() {
        assert_eq!(fit("abcdef", 4), "abc~");
        assert_eq!(fit("abc", 4), "abc");
    }
}
