//! Aligned text tables and the number formats every command prints.

/// A table whose columns are padded to their widest cell.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells are blank, extra ones are kept.
    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    /// The table as text: a header line, then one line per row; two spaces
    /// between columns, no trailing blanks.
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let cell = |row: &[String], i: usize| row.get(i).map_or("", String::as_str).to_owned();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        let all: Vec<&Vec<String>> = std::iter::once(&header).chain(&self.rows).collect();
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                all.iter()
                    .map(|r| cell(r, i).chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in all {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let text = cell(row, i);
                if i + 1 == columns {
                    line.push_str(&text);
                } else {
                    line.push_str(&format!("{text:<width$}  "));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `0x1f`.
pub fn hex(v: u64) -> String {
    format!("{v:#x}")
}

/// A byte count as hex and in binary units: `0x100000 (1 MiB)`.
pub fn size(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_owned();
    }
    const UNITS: [(u32, &str); 6] = [
        (60, "EiB"),
        (50, "PiB"),
        (40, "TiB"),
        (30, "GiB"),
        (20, "MiB"),
        (10, "KiB"),
    ];
    let human = UNITS
        .iter()
        .find(|(shift, _)| bytes >= 1 << shift && bytes % (1 << shift) == 0)
        .map_or_else(
            || format!("{bytes} B"),
            |(shift, unit)| format!("{} {unit}", bytes >> shift),
        );
    format!("{bytes:#x} ({human})")
}

/// Names joined with `|`, or `-` for none.
pub fn names(list: &[&str]) -> String {
    if list.is_empty() {
        "-".to_owned()
    } else {
        list.join("|")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_blanks() {
        let mut t = Table::new(&["IDX", "NAME", "NOTE"]);
        t.row(vec!["0".into(), "BAR0".into(), "".into()]);
        t.row(vec!["10".into(), "CONFIG".into(), "x".into()]);
        assert_eq!(t.render(), "IDX  NAME    NOTE\n0    BAR0\n10   CONFIG  x\n");
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(size(1 << 20), "0x100000 (1 MiB)");
        assert_eq!(size(0x1800), "0x1800 (6 KiB)");
        assert_eq!(size(100), "0x64 (100 B)");
        assert_eq!(size(0), "0");
    }
}
