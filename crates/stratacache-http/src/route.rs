//! Route patterns (`/products/{id}`, `/static/{*rest}`, axum's syntax) and
//! tag templates filled from the parameters a path matched.

use crate::error::Error;

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    /// `{*name}`: the rest of the path, possibly empty.
    Tail(String),
}

/// A compiled route pattern.
#[derive(Debug, Clone)]
pub(crate) struct RoutePattern {
    segments: Vec<Segment>,
}

/// The parameters a path matched, by name.
pub(crate) type Params = Vec<(String, String)>;

impl RoutePattern {
    pub fn parse(pattern: &str) -> Result<Self, Error> {
        let invalid = |reason: &'static str| Error::InvalidRoute {
            pattern: pattern.to_string(),
            reason,
        };
        let rest = pattern
            .strip_prefix('/')
            .ok_or_else(|| invalid("must start with '/'"))?;
        let mut segments = Vec::new();
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if name.starts_with('*') => {
                    if i + 1 != parts.len() {
                        return Err(invalid("a {*tail} parameter must be the last segment"));
                    }
                    Segment::Tail(name[1..].to_string())
                }
                Some(name) if !name.is_empty() && !name.contains(['{', '}']) => {
                    Segment::Param(name.to_string())
                }
                Some(_) => return Err(invalid("empty or nested parameter name")),
                None if part.contains(['{', '}']) => {
                    return Err(invalid("a parameter must fill a whole segment"))
                }
                None => Segment::Literal(part.to_string()),
            };
            segments.push(segment);
        }
        Ok(Self { segments })
    }

    /// The parameters if `path` (percent-decoded) matches.
    pub fn matches(&self, path: &str) -> Option<Params> {
        let rest = path.strip_prefix('/')?;
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut params = Vec::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Tail(name) => {
                    let tail = parts.get(i..).map(|t| t.join("/")).unwrap_or_default();
                    params.push((name.clone(), tail));
                    return Some(params);
                }
                Segment::Literal(text) => {
                    if parts.get(i) != Some(&text.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => match parts.get(i) {
                    Some(value) if !value.is_empty() => {
                        params.push((name.clone(), (*value).to_string()))
                    }
                    _ => return None,
                },
            }
        }
        (parts.len() == self.segments.len()).then_some(params)
    }
}

/// Fill `{name}` placeholders of `template` with matched parameters; a
/// placeholder without a parameter is left as written.
pub(crate) fn fill_template(template: &str, params: &Params) -> String {
    let mut out = template.to_string();
    for (name, value) in params {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_param_and_tail() {
        let p = RoutePattern::parse("/products/{id}").unwrap();
        assert_eq!(
            p.matches("/products/42"),
            Some(vec![("id".into(), "42".into())])
        );
        assert_eq!(p.matches("/products/"), None);
        assert_eq!(p.matches("/products/42/x"), None);
        assert_eq!(p.matches("/product/42"), None);
        let t = RoutePattern::parse("/static/{*rest}").unwrap();
        assert_eq!(
            t.matches("/static/a/b.css"),
            Some(vec![("rest".into(), "a/b.css".into())])
        );
        let root = RoutePattern::parse("/").unwrap();
        assert_eq!(root.matches("/"), Some(vec![]));
        assert_eq!(root.matches("/x"), None);
    }

    #[test]
    fn bad_patterns_are_typed_errors() {
        for bad in ["products", "/a/{*rest}/b", "/a/x{id}", "/a/{}"] {
            assert!(RoutePattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates() {
        let params = vec![("id".to_string(), "42".to_string())];
        assert_eq!(fill_template("product:{id}", &params), "product:42");
        assert_eq!(fill_template("products", &params), "products");
    }
}
