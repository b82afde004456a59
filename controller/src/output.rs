//! Text or JSON output. With `--json` exactly one JSON object goes to stdout.

use serde_json::{Map, Value};

/// How results are printed.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Output in JSON (`true`) or text.
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    /// Prints a result: the JSON object, or `text` for humans.
    pub fn print(&self, object: Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{object}");
        } else {
            println!("{}", text());
        }
    }
}

/// Builds a JSON object from pairs.
pub fn object<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert(k.to_string(), v);
    }
    Value::Object(m)
}

/// `12.345000000 DCT` from e9s.
pub fn format_dct(e9s: u64) -> String {
    format!("{}.{:09} DCT", e9s / 1_000_000_000, e9s % 1_000_000_000)
}

/// A left-aligned text table.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_tokens() {
        assert_eq!(super::format_dct(1_500_000_000), "1.500000000 DCT");
        assert_eq!(super::format_dct(7), "0.000000007 DCT");
    }
}
