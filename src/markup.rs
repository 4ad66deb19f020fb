//! Text put inside markup: the HTML report and the XML libvirt is handed
//! (names and paths from inventories and suites are not trusted to be
//! plain).

/// `text` safe inside elements and attribute values of HTML and XML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<b a="1">x & y's</b>"#),
            "&lt;b a=&quot;1&quot;&gt;x &amp; y&#39;s&lt;/b&gt;"
        );
    }
}
