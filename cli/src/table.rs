//! virsh's table layout (`tools/vsh-table.c`), reproduced exactly so scripts that parse
//! virsh's tables parse ours: each cell is printed as a space plus the cell, cells are padded
//! to the column's width plus two spaces except the last, and the rule under the header is
//! `sum(width + 3)` dashes.

/// A table with a header row.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders it; `quiet` drops the header and the rule, as `virsh -q` does.
    pub fn render(&self, quiet: bool) -> String {
        let cols = self.header.len();
        let width = |s: &str| s.chars().count();
        // Under -q virsh sizes the columns from the rows alone, as the header is not printed.
        let mut widths: Vec<usize> = if quiet {
            vec![0; cols]
        } else {
            self.header.iter().map(|h| width(h)).collect()
        };
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            for (i, cell) in cells.iter().enumerate().take(cols) {
                out.push(' ');
                out.push_str(cell);
                if i + 1 < cols {
                    out.push_str(&" ".repeat(widths[i] - width(cell) + 2));
                }
            }
            out.push('\n');
        };
        if !quiet {
            line(&mut out, &self.header);
            out.push_str(&"-".repeat(widths.iter().map(|w| w + 3).sum()));
            out.push('\n');
        }
        for row in &self.rows {
            line(&mut out, row);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_virsh_list() {
        let mut t = Table::new(&["Id", "Name", "State"]);
        t.row(vec!["1".into(), "test".into(), "running".into()]);
        assert_eq!(
            t.render(false),
            " Id   Name   State\n----------------------\n 1    test   running\n"
        );
        assert_eq!(t.render(true), " 1   test   running\n");
        let empty = Table::new(&["Id", "Name", "State"]);
        assert_eq!(
            empty.render(false),
            " Id   Name   State\n--------------------\n"
        );
    }
}
