//! `updraft report`: an execution's history as one self-contained HTML file.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use updraft_engine::exec::history::ExecutionView;

/// Writes the report of `view` to `output` (default `<name>.html`; `-`: stdout).
pub fn write(view: &ExecutionView, name: &str, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let html = updraft_console::report(view, crate::run::now_ms());
    let default = format!("{name}.html");
    let path = output.unwrap_or(Path::new(&default));
    if path == Path::new("-") {
        out_raw!("{html}");
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::write(path, html).with_context(|| format!("{}: cannot write", path.display()))?;
    eprintln!("updraft: wrote {} ({})", path.display(), view.phase);
    Ok(ExitCode::SUCCESS)
}
