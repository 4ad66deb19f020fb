//! The HTML page of a run as a reviewer's browser shows it: on a laptop's
//! width (1100 px) the page needs no sideways scrolling, no table is wider
//! than the page, and every figure is drawn. Ignored under `MIGSUITE_LAB`:
//! a lab's runner need not have a browser, and the page does not depend
//! on the lab.

mod common;

use common::browser::layout;
use libtest_mimic::{Arguments, Failed, Trial};
use migsuite::report::html::render;
use migsuite::report::json::SavedRun;
use std::path::Path;

fn main() {
    let args = Arguments::from_args();
    let on_users_lab = std::env::var_os("MIGSUITE_LAB").is_some();
    let trials = vec![Trial::test(
        "a_run_s_page_keeps_to_a_laptop_s_width",
        a_run_s_page_keeps_to_a_laptop_s_width,
    )
    .with_ignored_flag(on_users_lab)];
    libtest_mimic::run(&args, trials).exit();
}

fn a_run_s_page_keeps_to_a_laptop_s_width() -> Result<(), Failed> {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ci-report-two-cases.json");
    let page = render(&SavedRun::read(&fixture)?)?;
    let drawn = layout(&page, 1100);
    if drawn.scroll_width > drawn.client_width || drawn.tables_scrolling > 0 {
        return Err(format!("the page is wider than a 1100 px window: {drawn:?}").into());
    }
    if drawn.figures.len() != page.matches("<svg").count()
        || drawn.figures.iter().any(|(w, h)| *w < 200.0 || *h < 100.0)
    {
        return Err(format!("a figure is not drawn: {drawn:?}").into());
    }
    Ok(())
}
