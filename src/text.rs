//! Caller text as Writ's messages may quote it.

/// The longest part of a caller's input an error message quotes, counted
/// in characters of its escaped form.
const QUOTED_CHARS: usize = 64;

/// A caller's input as an error message quotes it: escaped like `{:?}` and
/// cut after [`QUOTED_CHARS`] escaped characters, with `…` before the closing
/// quote to say it was cut. An error must never echo an unbounded
/// value: a 20 KB lease id would make a 20 KB status that some clients
/// cannot even read.
pub fn quoted(input: &str) -> String {
    let mut out = String::with_capacity(input.len().min(QUOTED_CHARS) + 8);
    out.push('"');
    let mut budget = QUOTED_CHARS;
    for c in input.chars() {
        // `{:?}` of a string leaves single quotes alone.
        let escaped: String = if c == '\'' { c.to_string() } else { c.escape_debug().collect() };
        let width = escaped.chars().count();
        if width > budget {
            out.push_str("…\"");
            return out;
        }
        budget -= width;
        out.push_str(&escaped);
    }
    out.push('"');
    out
}

/// An error and its causes on one line. Transport errors (tonic, reqwest)
/// say what went wrong (an unknown CA, a name mismatch) only in their
/// sources; a cause already in the text is not repeated.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}
