//! Reads the files a command is given into one [`Package`]: `.tgz` packages and Updraft YAML files.

use std::path::Path;

use updraft_engine::{Limits, Package, Problem, Problems};

/// Largest YAML file accepted.
const MAX_YAML_BYTES: u64 = 16 << 20;

/// Loads and merges every file; every problem found is returned, each naming its file.
pub fn load(files: &[std::path::PathBuf]) -> Result<Package, Problems> {
    let mut pkg = Package::default();
    let mut problems = Vec::new();
    for path in files {
        match load_one(path) {
            Ok(p) => {
                if let Err(mut e) = pkg.merge(p) {
                    problems.append(&mut e.0);
                }
            }
            Err(mut e) => problems.append(&mut e.0),
        }
    }
    Problems(problems).into_result(pkg)
}

fn load_one(path: &Path) -> Result<Package, Problems> {
    let name = path.display().to_string();
    let meta =
        std::fs::metadata(path).map_err(|e| Problem::file(&name, format!("cannot read: {e}")))?;
    if meta.is_dir() {
        return Err(Problem::file(
            &name,
            "is a directory; give a .tgz package or a .yaml workflow file",
        )
        .into());
    }
    let limits = Limits::default();
    let is_yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let max = if is_yaml {
        MAX_YAML_BYTES
    } else {
        limits.max_archive_bytes
    };
    if meta.len() > max {
        return Err(Problem::file(
            &name,
            format!("is {} bytes, over the {max} byte limit", meta.len()),
        )
        .into());
    }
    let bytes =
        std::fs::read(path).map_err(|e| Problem::file(&name, format!("cannot read: {e}")))?;
    if is_yaml {
        let text =
            String::from_utf8(bytes).map_err(|_| Problem::file(&name, "is not UTF-8 text"))?;
        updraft_engine::yaml::load(&name, &text)
    } else {
        Package::from_tgz(&name, &bytes, limits)
    }
}
