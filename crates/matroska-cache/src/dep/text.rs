//! The escaped text form of dependency components.
//!
//! Components are separated by `:`; inside a component `\` becomes `\\`, `:` becomes `\:` and
//! the line breaks become `\n` and `\r` (so one dependency always prints on one line). No other
//! escape is accepted when parsing, which keeps exactly one text per dependency.

use std::fmt;

/// A dependency's text form could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDepError {
    input: String,
    reason: &'static str,
}

impl ParseDepError {
    pub(super) fn new(input: &str, reason: &'static str) -> Self {
        ParseDepError {
            input: input.to_owned(),
            reason,
        }
    }

    /// The text that failed to parse.
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Display for ParseDepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid dependency {:?}: {}", self.input, self.reason)
    }
}

impl std::error::Error for ParseDepError {}

/// Appends `part` to `out`, escaped.
pub(super) fn escape_into(part: &str, out: &mut String) {
    for c in part.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            ':' => out.push_str(r"\:"),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            c => out.push(c),
        }
    }
}

/// Checks that `rest` (the text after the kind) uses only canonical escapes and contains no raw
/// line break; returns the number of components.
pub(super) fn validate(rest: &str) -> Result<usize, &'static str> {
    let mut count = 1;
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            ':' => count += 1,
            '\n' | '\r' => {
                return Err(r"a line break inside a component must be escaped as \n or \r")
            }
            '\\' => match chars.next() {
                Some('\\' | ':' | 'n' | 'r') => {}
                Some(_) => return Err(r"unknown escape (only \\, \:, \n and \r are allowed)"),
                None => return Err(r"a trailing '\' must be escaped as '\\'"),
            },
            _ => {}
        }
    }
    Ok(count)
}

/// Splits an already validated text at unescaped `:` and unescapes each component.
pub(super) fn split_unescape(rest: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        let current = parts.last_mut().expect("parts is never empty");
        match c {
            ':' => parts.push(String::new()),
            '\\' => match chars.next() {
                Some('n') => current.push('\n'),
                Some('r') => current.push('\r'),
                Some(other) => current.push(other),
                None => {}
            },
            c => current.push(c),
        }
    }
    parts
}
