//! A parser for the Prometheus text exposition format (what `/metrics` serves), and quantiles
//! from histogram buckets. Pure functions over strings, so they can be fuzzed.

use std::collections::BTreeMap;

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (for histograms, with its `_bucket`/`_sum`/`_count` suffix).
    pub name: String,
    /// Label pairs, sorted by name.
    pub labels: BTreeMap<String, String>,
    /// The value (`NaN`, `+Inf` and `-Inf` included).
    pub value: f64,
}

/// A parse failure, with the 1-based line it happened on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub reason: String,
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Parses a whole exposition. Comments (`# HELP`, `# TYPE`) and blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: &str| ParseError {
            line: i + 1,
            reason: reason.to_owned(),
        };
        let (name, rest) = match line.find(['{', ' ']) {
            Some(p) => (&line[..p], &line[p..]),
            None => return Err(err("no value")),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(err("bad metric name"));
        }
        let mut labels = BTreeMap::new();
        let rest = if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let mut end = None;
            loop {
                // Skip separators.
                while let Some(&(_, c)) = chars.peek() {
                    if c == ',' || c == ' ' {
                        chars.next();
                    } else {
                        break;
                    }
                }
                match chars.peek() {
                    Some(&(p, '}')) => {
                        end = Some(p + 1);
                        break;
                    }
                    None => break,
                    _ => {}
                }
                let mut key = String::new();
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(err("label value must be quoted"));
                }
                let mut value = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => break,
                        },
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                if !closed {
                    return Err(err("unterminated label value"));
                }
                labels.insert(key.trim().to_owned(), value);
            }
            match end {
                Some(e) => &body[e..],
                None => return Err(err("unterminated label set")),
            }
        } else {
            rest
        };
        let value = rest
            .split_whitespace()
            .next()
            .and_then(parse_value)
            .ok_or_else(|| err("bad value"))?;
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(out)
}

/// The `q`-quantile of a cumulative histogram given as `(upper bound, cumulative count)` pairs
/// (any order; `+Inf` included), interpolating linearly inside the bucket — the same estimate
/// as PromQL's `histogram_quantile`. `None` when there are no observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let mut b: Vec<(f64, f64)> = buckets.to_vec();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = b.last()?.1;
    if total <= 0.0 || !q.is_finite() {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let mut prev_bound = 0.0;
    let mut prev_count = 0.0;
    for &(bound, count) in &b {
        if count >= rank {
            if bound.is_infinite() {
                // Above the highest finite bucket: PromQL answers that bucket's bound.
                return Some(prev_bound);
            }
            let in_bucket = count - prev_count;
            if in_bucket <= 0.0 {
                return Some(bound);
            }
            return Some(prev_bound + (bound - prev_bound) * (rank - prev_count) / in_bucket);
        }
        prev_bound = bound;
        prev_count = count;
    }
    Some(prev_bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_labels_escapes_and_special_values() {
        let text = "# HELP x y\n# TYPE x counter\nx_total 5\nq{queue=\"realtime\",a=\"b\\\"c\"} 1.5e3\nh_bucket{le=\"+Inf\"} +Inf\n\nn NaN 1700000000\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "x_total");
        assert_eq!(s[0].value, 5.0);
        assert_eq!(s[1].labels["queue"], "realtime");
        assert_eq!(s[1].labels["a"], "b\"c");
        assert_eq!(s[1].value, 1500.0);
        assert!(s[2].value.is_infinite());
        assert!(s[3].value.is_nan());
    }

    #[test]
    fn rejects_garbage_with_the_line_number() {
        assert_eq!(parse("ok 1\nbad{x=1} 2\n").unwrap_err().line, 2);
        assert!(parse("novalue\n").is_err());
        assert!(parse("m{a=\"b\" 1\n").is_err());
        assert!(parse("m{a=\"b\"} notanumber\n").is_err());
    }

    #[test]
    fn quantile_interpolates_like_promql() {
        // 100 observations: 50 in (0, 1], 40 in (1, 2], 10 in (2, 4].
        let b = [
            (1.0, 50.0),
            (2.0, 90.0),
            (4.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(histogram_quantile(0.5, &b), Some(1.0));
        assert!((histogram_quantile(0.7, &b).unwrap() - 1.5).abs() < 1e-9);
        assert!((histogram_quantile(0.95, &b).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(histogram_quantile(0.99, &[(f64::INFINITY, 0.0)]), None);
        // Everything above the last finite bound.
        assert_eq!(
            histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 10.0)]),
            Some(1.0)
        );
    }

    #[test]
    fn never_panics_on_arbitrary_input() {
        for s in [
            "{",
            "}",
            "a{",
            "a{}",
            "a{} ",
            "a{=\"\"} 1",
            "a{b=\"\\",
            "\u{0}",
            "a 1 2 3",
        ] {
            let _ = parse(s);
        }
    }
}
