//! Which part of a stored whole response a `Range` request gets (RFC 9110
//! §14.1.2). One byte range is served as a `206`; several ranges, other
//! units and malformed values get the whole response, which a server may
//! always send instead (§14.2).

use http::HeaderValue;

/// What to send for a `Range` over a body of some length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selected {
    /// The whole response (`200`).
    Whole,
    /// Bytes `first..=last` (`206`).
    Part { first: usize, last: usize },
    /// No byte of the range exists (`416`).
    Unsatisfiable,
}

pub(crate) fn select(range: &HeaderValue, len: usize) -> Selected {
    let Some(spec) = range
        .to_str()
        .ok()
        .and_then(|text| text.trim().strip_prefix("bytes="))
    else {
        return Selected::Whole;
    };
    if spec.contains(',') {
        return Selected::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Selected::Whole;
    };
    let number = |text: &str| -> Option<Option<usize>> {
        let text = text.trim();
        if text.is_empty() {
            return Some(None);
        }
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Past `usize`, it is past any body.
        Some(Some(text.parse().unwrap_or(usize::MAX)))
    };
    let (Some(first), Some(last)) = (number(first), number(last)) else {
        return Selected::Whole;
    };
    match (first, last) {
        // `bytes=-n`: the last n bytes.
        (None, Some(suffix)) if suffix > 0 && len > 0 => Selected::Part {
            first: len.saturating_sub(suffix),
            last: len - 1,
        },
        (None, Some(_)) => Selected::Unsatisfiable,
        (None, None) => Selected::Whole,
        (Some(first), last) => {
            if last.is_some_and(|last| last < first) {
                return Selected::Whole;
            }
            if first >= len {
                return Selected::Unsatisfiable;
            }
            Selected::Part {
                first,
                last: last.map_or(len - 1, |last| last.min(len - 1)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(range: &str, len: usize) -> Selected {
        select(&HeaderValue::from_str(range).unwrap(), len)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(pick("bytes=0-1", 10), Selected::Part { first: 0, last: 1 });
        assert_eq!(pick("bytes=2-", 10), Selected::Part { first: 2, last: 9 });
        assert_eq!(pick("bytes=-3", 10), Selected::Part { first: 7, last: 9 });
        assert_eq!(pick("bytes=-30", 10), Selected::Part { first: 0, last: 9 });
        assert_eq!(pick("bytes=5-99", 10), Selected::Part { first: 5, last: 9 });
    }

    #[test]
    fn unsatisfiable_and_ignored_ranges() {
        assert_eq!(pick("bytes=10-", 10), Selected::Unsatisfiable);
        assert_eq!(pick("bytes=-0", 10), Selected::Unsatisfiable);
        assert_eq!(pick("bytes=0-", 0), Selected::Unsatisfiable);
        for ignored in [
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=-",
        ] {
            assert_eq!(pick(ignored, 10), Selected::Whole, "{ignored}");
        }
    }
}
