//! Redis's glob patterns (`*`, `?`, `[…]`, `\` escapes), for SCAN MATCH.

/// Whether `text` matches `pattern`.
pub(super) fn matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| matches(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && matches(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some(close) = rest.iter().position(|&b| b == b']') else {
                return literal(b'[', rest, text);
            };
            let (class, after) = (&rest[..close], &rest[close + 1..]);
            let Some((&c, tail)) = text.split_first() else {
                return false;
            };
            let (negated, class) = match class.split_first() {
                Some((b'^', class)) => (true, class),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= (class[i]..=class[i + 2]).contains(&c);
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negated && matches(after, tail)
        }
        Some((b'\\', rest)) => match rest.split_first() {
            Some((&escaped, rest)) => literal(escaped, rest, text),
            None => literal(b'\\', rest, text),
        },
        Some((&c, rest)) => literal(c, rest, text),
    }
}

fn literal(c: u8, rest: &[u8], text: &[u8]) -> bool {
    text.first() == Some(&c) && matches(rest, &text[1..])
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs_match_as_in_redis() {
        assert!(matches(b"ns:{user:*", b"ns:{user:42}"));
        assert!(!matches(b"ns:{user:*", b"ns:{order:1}"));
        assert!(matches(b"a\\*b", b"a*b"));
        assert!(!matches(b"a\\*b", b"axb"));
        assert!(matches(b"h?llo", b"hello"));
        assert!(matches(b"h[ae]llo", b"hallo"));
        assert!(!matches(b"h[^e]llo", b"hello"));
        assert!(matches(b"*", b""));
    }
}
