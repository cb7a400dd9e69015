//! Route path patterns.
//!
//! A pattern is a `/`-separated list of segments:
//! - a literal (`users`), matched exactly (case-sensitive, no percent-decoding);
//! - a parameter (`:id`), matching exactly one non-empty segment;
//! - a final `*`, matching the rest of the path, including nothing.
//!
//! Empty segments are ignored on both sides, so `/status` and `/status/` are the same path.

use std::fmt;

/// One segment of a [`PathPattern`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Literal text.
    Literal(String),
    /// `:name`.
    Param(String),
}

/// A parsed path pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathPattern {
    /// Segments before the optional trailing wildcard.
    pub segments: Vec<Segment>,
    /// Ends with `/*`.
    pub prefix: bool,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("must start with '/'")]
    NoLeadingSlash,
    #[error("'*' is only allowed as the whole last segment")]
    MisplacedWildcard,
    #[error("parameter needs a name, like ':id'")]
    EmptyParam,
    #[error("parameter ':{0}' appears twice")]
    DuplicateParam(String),
    #[error("characters '?', '#' and whitespace are not allowed")]
    BadCharacter,
}

impl PathPattern {
    /// Parse `text`.
    pub fn parse(text: &str) -> Result<PathPattern, PatternError> {
        if !text.starts_with('/') {
            return Err(PatternError::NoLeadingSlash);
        }
        if text
            .chars()
            .any(|c| c == '?' || c == '#' || c.is_whitespace())
        {
            return Err(PatternError::BadCharacter);
        }
        let parts: Vec<&str> = text.split('/').filter(|s| !s.is_empty()).collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut prefix = false;
        for (i, part) in parts.iter().enumerate() {
            if part.contains('*') {
                if *part != "*" || i + 1 != parts.len() {
                    return Err(PatternError::MisplacedWildcard);
                }
                prefix = true;
            } else if let Some(name) = part.strip_prefix(':') {
                if name.is_empty() {
                    return Err(PatternError::EmptyParam);
                }
                if segments
                    .iter()
                    .any(|s| matches!(s, Segment::Param(n) if n == name))
                {
                    return Err(PatternError::DuplicateParam(name.to_string()));
                }
                segments.push(Segment::Param(name.to_string()));
            } else {
                segments.push(Segment::Literal((*part).to_string()));
            }
        }
        Ok(PathPattern { segments, prefix })
    }

    /// Number of literal segments.
    pub fn literal_count(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    /// Match kind rank: exact literal paths 2, parametric 1, prefix 0.
    pub fn kind_rank(&self) -> u8 {
        if self.prefix {
            0
        } else if self.literal_count() == self.segments.len() {
            2
        } else {
            1
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.segments {
            match s {
                Segment::Literal(l) => write!(f, "/{l}")?,
                Segment::Param(p) => write!(f, "/:{p}")?,
            }
        }
        if self.prefix {
            write!(f, "/*")?;
        } else if self.segments.is_empty() {
            write!(f, "/")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_kinds() {
        let p = PathPattern::parse("/status").unwrap();
        assert_eq!(p.segments, vec![Segment::Literal("status".into())]);
        assert!(!p.prefix);
        assert_eq!(p.kind_rank(), 2);

        let p = PathPattern::parse("/api/users/*").unwrap();
        assert!(p.prefix);
        assert_eq!(p.segments.len(), 2);
        assert_eq!(p.kind_rank(), 0);

        let p = PathPattern::parse("/users/:id/posts/:post").unwrap();
        assert_eq!(p.segments[1], Segment::Param("id".into()));
        assert_eq!(p.kind_rank(), 1);
        assert_eq!(p.literal_count(), 2);

        assert_eq!(PathPattern::parse("/").unwrap().segments.len(), 0);
        assert!(PathPattern::parse("/*").unwrap().prefix);
    }

    #[test]
    fn refuses_bad_patterns() {
        assert_eq!(
            PathPattern::parse("status"),
            Err(PatternError::NoLeadingSlash)
        );
        assert_eq!(
            PathPattern::parse("/a/*/b"),
            Err(PatternError::MisplacedWildcard)
        );
        assert_eq!(
            PathPattern::parse("/a*"),
            Err(PatternError::MisplacedWildcard)
        );
        assert_eq!(PathPattern::parse("/a/:"), Err(PatternError::EmptyParam));
        assert_eq!(
            PathPattern::parse("/:id/:id"),
            Err(PatternError::DuplicateParam("id".into()))
        );
        assert_eq!(
            PathPattern::parse("/a?b=1"),
            Err(PatternError::BadCharacter)
        );
    }

    #[test]
    fn displays_normalised() {
        for (input, out) in [("/a//b/", "/a/b"), ("/", "/"), ("/x/:id/*", "/x/:id/*")] {
            assert_eq!(PathPattern::parse(input).unwrap().to_string(), out);
        }
    }
}
