//! A page as a browser lays it out: headless Chromium (installed by
//! `ci/setup.sh`) loads a copy of the page with a script that measures it
//! and writes what it found into the DOM it dumps. The pages themselves
//! carry no script.

use std::path::Path;

const CHROMIUM: &str = "/usr/bin/chromium";
/// Flags that keep a headless Chromium off the network and its profile
/// apart (the machines have no network beyond package registries).
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// What a page's layout came to, at one window width.
#[derive(Debug)]
pub struct Layout {
    /// The document's width, and the window's (without a scroll bar).
    pub scroll_width: f64,
    pub client_width: f64,
    /// Tables wider than the box that holds them.
    pub tables_scrolling: usize,
    /// Each figure's drawn width and height.
    pub figures: Vec<(f64, f64)>,
}

const MEASURE: &str = r#"<script>
const d = document.documentElement;
const tables = [...document.querySelectorAll('div.wide')].filter(w => w.scrollWidth > w.clientWidth + 1);
const figures = [...document.querySelectorAll('svg')].map(s => { const r = s.getBoundingClientRect(); return r.width + 'x' + r.height; });
document.body.setAttribute('data-layout', [d.scrollWidth, d.clientWidth, tables.length, figures.join(' ')].join(';'));
</script>"#;

/// Lays `page` out in a window `width` pixels wide.
pub fn layout(page: &str, width: u32) -> Layout {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: `bash ci/setup.sh` installs Debian's chromium"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("page.html");
    let measured = page.replacen("</body>", &format!("{MEASURE}\n</body>"), 1);
    std::fs::write(&file, measured).unwrap();
    let profile = dir.path().join("profile");
    let out = duct::cmd(
        "timeout",
        ["120", CHROMIUM]
            .into_iter()
            .map(String::from)
            .chain(FLAGS.iter().map(|f| f.to_string()))
            .chain([
                format!("--user-data-dir={}", profile.display()),
                format!("--window-size={width},900"),
                "--dump-dom".into(),
                format!("file://{}", file.display()),
            ]),
    )
    .stderr_null()
    .stdout_capture()
    .unchecked()
    .run()
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom
        .find("data-layout=\"")
        .unwrap_or_else(|| panic!("Chromium ({}) measured nothing:\n{dom}", out.status))
        + "data-layout=\"".len();
    let fields: Vec<&str> = dom[start..dom[start..].find('"').unwrap() + start]
        .split(';')
        .collect();
    let number = |s: &str| s.parse::<f64>().unwrap();
    Layout {
        scroll_width: number(fields[0]),
        client_width: number(fields[1]),
        tables_scrolling: number(fields[2]) as usize,
        figures: fields[3]
            .split_whitespace()
            .map(|f| {
                let (w, h) = f.split_once('x').unwrap();
                (number(w), number(h))
            })
            .collect(),
    }
}
