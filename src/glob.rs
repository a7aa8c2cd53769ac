//! Go's `filepath.Match` for one path segment, the way Prometheus's
//! `file_sd_configs` expands a file pattern: `*` (any run of characters),
//! `?` (one character), `[abc]`, `[a-z]`, `[^a-z]` (a class, `^` negates),
//! and `\` escaping the next character. A malformed pattern (an unclosed
//! `[`, an empty class, a trailing `\`) is an error, found when the config is
//! checked. Characters, not bytes, as Go matches runes.

/// A pattern Go would refuse (`filepath.ErrBadPattern`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid pattern (Go's filepath.Match syntax: * ? [a-z] [^a-z] \\c)")]
pub(crate) struct BadPattern(pub(crate) String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// `*`: any run of characters.
    Star,
    /// `?`: one character.
    One,
    /// `[...]`: one character in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Literal(char),
}

/// A compiled pattern for one path segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    pub(crate) fn new(pattern: &str) -> Result<Pattern, BadPattern> {
        let bad = || BadPattern(pattern.to_string());
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' => {
                    // Consecutive stars are one.
                    if tokens.last() == Some(&Token::Star) {
                        continue;
                    }
                    Token::Star
                }
                '?' => Token::One,
                '\\' => Token::Literal(chars.next().ok_or_else(bad)?),
                '[' => {
                    let negated = chars.next_if_eq(&'^').is_some();
                    let mut ranges = Vec::new();
                    loop {
                        let lo = match chars.next() {
                            None => return Err(bad()),
                            Some(']') if !ranges.is_empty() => break,
                            Some(']' | '-') => return Err(bad()),
                            Some('\\') => chars.next().ok_or_else(bad)?,
                            Some(c) => c,
                        };
                        let hi = if chars.next_if_eq(&'-').is_some() {
                            match chars.next() {
                                None | Some(']' | '-') => return Err(bad()),
                                Some('\\') => chars.next().ok_or_else(bad)?,
                                Some(c) => c,
                            }
                        } else {
                            lo
                        };
                        ranges.push((lo, hi));
                    }
                    Token::Class { negated, ranges }
                }
                c => Token::Literal(c),
            });
        }
        Ok(Pattern { tokens })
    }

    /// Whether the pattern has anything but literals (a plain file name
    /// is taken as it is, not listed).
    pub(crate) fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    /// Whether `name` (one path segment) matches the whole pattern.
    pub(crate) fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let t = &self.tokens;
        // Greedy with a return to the last star: every other token takes
        // exactly one character, so this is exact and linear per star.
        let (mut p, mut n) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match t.get(p) {
                Some(Token::Star) => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                Some(tok) if one(tok, name[n]) => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
            match star {
                Some((sp, sn)) => {
                    // The star takes one more character.
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return false,
            }
        }
        t[p..].iter().all(|tok| *tok == Token::Star)
    }
}

/// Whether the single-character token `tok` takes `c`.
fn one(tok: &Token, c: char) -> bool {
    match tok {
        Token::One => true,
        Token::Literal(l) => *l == c,
        Token::Class { negated, ranges } => {
            ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
        }
        Token::Star => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        Pattern::new(p).unwrap().matches(n)
    }

    /// Cases as Go's `filepath.Match` decides them (from its test table;
    /// a segment never holds a separator, so those cases are left out).
    #[test]
    fn matches_as_go_does() {
        for (p, n, want) in [
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("a[^a][^a][^a]b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "a", false),
            ("tg_[0-9].json", "tg_7.json", true),
            ("tg_[0-9].json", "tg_x.json", false),
            ("*.json", "a.yml", false),
            ("?.json", "ab.json", false),
            ("*", "", true),
        ] {
            assert_eq!(m(p, n), want, "{p:?} vs {n:?}");
        }
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for p in [
            "[", "[^", "[^bc", "a[", "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[\\", "a\\",
        ] {
            assert!(Pattern::new(p).is_err(), "{p:?}");
        }
        assert!(Pattern::new("a").unwrap().is_literal());
        assert!(!Pattern::new("a[b]").unwrap().is_literal());
    }
}
