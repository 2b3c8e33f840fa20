//! docs/benchmarks.md: each measuring command rewrites its own generated section, between
//! `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`, and leaves the prose around it alone.

use std::fs;

use anyhow::{Context as _, Result};

use testbed::paths::workspace_root;

/// Replaces the body of section `name` in docs/benchmarks.md with `text`.
pub fn update(name: &str, text: &str) -> Result<()> {
    let path = workspace_root().join("docs/benchmarks.md");
    let doc =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let updated = replace_section(&doc, name, text)
        .with_context(|| format!("{} has no generated:{name} section", path.display()))?;
    fs::write(&path, updated).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("updated section {name} of {}", path.display());
    Ok(())
}

fn replace_section(doc: &str, name: &str, text: &str) -> Option<String> {
    let open = format!("<!-- generated:{name} -->\n");
    let close = format!("<!-- /generated:{name} -->");
    let start = doc.find(&open)? + open.len();
    let end = start + doc[start..].find(&close)?;
    Some(format!(
        "{}{}\n{}",
        &doc[..start],
        text.trim_end(),
        &doc[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::replace_section;

    #[test]
    fn replaces_only_the_named_section() {
        let doc = "intro\n<!-- generated:a -->\nold a\n<!-- /generated:a -->\nmid\n\
                   <!-- generated:b -->\nold b\n<!-- /generated:b -->\nend\n";
        let new = replace_section(doc, "b", "new b\nline 2\n").unwrap();
        assert_eq!(
            new,
            "intro\n<!-- generated:a -->\nold a\n<!-- /generated:a -->\nmid\n\
             <!-- generated:b -->\nnew b\nline 2\n<!-- /generated:b -->\nend\n"
        );
        assert!(replace_section(doc, "c", "x").is_none());
    }
}
