//! The results table, as plain text for the terminal and as markdown.

/// One line of the table.
#[derive(Clone, Debug)]
pub struct Row {
    pub label: String,
    pub ours: String,
    pub peer: String,
    pub ratio: String,
}

impl Row {
    pub fn new(
        label: impl Into<String>,
        ours: impl Into<String>,
        peer: impl Into<String>,
        ratio: impl Into<String>,
    ) -> Self {
        Row {
            label: label.into(),
            ours: ours.into(),
            peer: peer.into(),
            ratio: ratio.into(),
        }
    }
}

/// A target and whether this run met it.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub measured: String,
    pub met: bool,
}

/// The table with its header.
#[derive(Clone, Debug)]
pub struct Table {
    pub peer_header: String,
    pub rows: Vec<Row>,
}

impl Table {
    fn header(&self) -> [String; 4] {
        [
            "benchmark".into(),
            "ours".into(),
            format!("peer ({})", self.peer_header),
            "ratio".into(),
        ]
    }

    /// Aligned columns, as printed on the terminal.
    pub fn text(&self) -> String {
        let header = self.header();
        let cells: Vec<[String; 4]> = std::iter::once(header)
            .chain(self.rows.iter().map(|r| {
                [
                    r.label.clone(),
                    r.ours.clone(),
                    r.peer.clone(),
                    r.ratio.clone(),
                ]
            }))
            .collect();
        let mut widths = [0usize; 4];
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for row in &cells {
            let mut line = String::new();
            for (i, (c, w)) in row.iter().zip(widths).enumerate() {
                if i == 3 {
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    line.push_str(&" ".repeat(w - c.chars().count() + 3));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// A markdown table.
    pub fn markdown(&self) -> String {
        let header = self.header();
        let esc = |s: &str| s.replace('|', "\\|");
        let mut out = format!(
            "| {} | {} | {} | {} |\n|---|---:|---:|---:|\n",
            header[0], header[1], header[2], header[3]
        );
        for r in &self.rows {
            // Keep the indentation of sub-rows visible in markdown.
            let label = match r.label.strip_prefix("  ") {
                Some(rest) => format!("&nbsp;&nbsp;{}", esc(rest)),
                None => esc(&r.label),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                label,
                esc(&r.ours),
                esc(&r.peer),
                esc(&r.ratio)
            ));
        }
        out
    }
}

/// Targets as a checklist, for the terminal.
pub fn targets_text(targets: &[Target]) -> String {
    targets
        .iter()
        .map(|t| {
            format!(
                "[{}] {}: {}\n",
                if t.met { "met" } else { "MISSED" },
                t.name,
                t.measured
            )
        })
        .collect()
}

/// Targets as a markdown table.
pub fn targets_markdown(targets: &[Target]) -> String {
    let mut out = String::from("| target | measured | met |\n|---|---|---|\n");
    for t in targets {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            t.name,
            t.measured,
            if t.met { "yes" } else { "**no**" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_columns_align() {
        let t = Table {
            peer_header: "PostgreSQL 15".into(),
            rows: vec![
                Row::new("durable transfers/s", "4,210", "3,950", "1.07x"),
                Row::new("  p50 / p99", "6.8 / 14 ms", "7.9 / 18 ms", ""),
            ],
        };
        let text = t.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("ours").unwrap();
        assert_eq!(lines[1].find("4,210").unwrap(), col);
        assert_eq!(lines[2].find("6.8").unwrap(), col);
        assert!(t
            .markdown()
            .contains("| &nbsp;&nbsp;p50 / p99 | 6.8 / 14 ms |"));
    }
}
