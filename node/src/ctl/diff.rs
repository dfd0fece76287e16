//! `meshctl diff`: what `apply` would change, as a line diff of YAML per resource.

use mesh_core::config::ValidResource;
use mesh_proto::resource::Resource;

/// Print the diff for one resource; true if it differs from the live one.
pub fn print(desired: &ValidResource, live: Option<&Resource>) -> anyhow::Result<bool> {
    let want = serde_json::json!({
        "labels": desired.labels,
        "spec": serde_json::from_str::<serde_json::Value>(&desired.spec_json)?,
    });
    let have = live.map(|r| serde_json::json!({ "labels": r.metadata.labels, "spec": r.spec }));
    if have.as_ref() == Some(&want) {
        return Ok(false);
    }
    let want_y = serde_saphyr::to_string(&want)?;
    let have_y = match &have {
        Some(h) => serde_saphyr::to_string(h)?,
        None => String::new(),
    };
    println!(
        "--- {} (live{})",
        desired.key,
        if have.is_none() { ", absent" } else { "" }
    );
    println!("+++ {} (desired)", desired.key);
    for line in line_diff(&have_y, &want_y) {
        println!("{line}");
    }
    Ok(true)
}

/// A minimal LCS line diff: ` ` common, `-` only in `a`, `+` only in `b`.
pub fn line_diff(a: &str, b: &str) -> Vec<String> {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(format!(" {}", a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+{}", b[j]));
            j += 1;
        } else {
            out.push(format!("-{}", a[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_diff_marks_changes() {
        assert_eq!(
            line_diff("a\nb\nc", "a\nx\nc"),
            vec![" a", "+x", "-b", " c"]
        );
        assert_eq!(line_diff("", "a"), vec!["+a"]);
    }
}
