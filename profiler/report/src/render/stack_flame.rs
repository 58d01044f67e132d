//! `flame-stack.svg`: the deepest stack of each thread (its overflow, if it had one),
//! widths in **stack bytes** per frame: which functions eat the stack.

use inferno::flamegraph::color::{BasicPalette, Palette};
use inferno::flamegraph::{self, Options};

use super::flamegraph::empty_svg;
use crate::{Analysis, ReportError};

/// The folded lines (`thread;outer;…;inner bytes`).
pub fn folded(a: &Analysis) -> String {
    let mut s = String::new();
    for l in &a.stack.folded {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// The SVG.
pub fn svg(a: &Analysis) -> Result<Vec<u8>, ReportError> {
    let title = "Deepest stack of each thread, by frame (stack bytes)";
    if a.stack.folded.is_empty() {
        return Ok(empty_svg(
            title,
            "no deepest stack recorded (the depth sampler was off or saw nothing)",
        )
        .into_bytes());
    }
    let mut opts = Options::default();
    opts.colors = Palette::Basic(BasicPalette::Orange);
    opts.title = title.to_string();
    opts.count_name = "bytes".to_string();
    opts.deterministic = true;
    let exe = a.program.exe.rsplit('/').next().unwrap_or("");
    opts.subtitle = Some(format!(
        "{exe} (pid {}): each frame's width is its own stack frame size",
        a.program.pid
    ));
    let mut out = Vec::new();
    flamegraph::from_lines(
        &mut opts,
        a.stack.folded.iter().map(String::as_str),
        &mut out,
    )
    .map_err(|e| ReportError::Render(format!("the stack flamegraph: {e}")))?;
    Ok(out)
}
