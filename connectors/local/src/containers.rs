//! How raw containers (tasks with a `data_config`) run: through a container engine's CLI (docker or
//! podman) when one works on this machine, else as local processes with their paths remapped.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Which engine to use, as asked on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerChoice {
    /// docker, else podman, else processes.
    Auto,
    /// docker; an error when it does not work.
    Docker,
    /// podman; an error when it does not work.
    Podman,
    /// Always as processes.
    Process,
}

/// How raw containers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Containers {
    /// As local processes: the container's input and output paths in its arguments are pointed at local
    /// folders.
    Process,
    /// Through an engine's CLI (`<program> run --rm --name … -v … image command…`).
    Engine {
        /// The engine's executable.
        program: PathBuf,
        /// `docker` or `podman`.
        name: &'static str,
    },
}

impl std::fmt::Display for Containers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Process => f.write_str("as local processes"),
            Self::Engine { program, name } => write!(f, "with {name} ({})", program.display()),
        }
    }
}

/// The first `name` file in the folders of `path` (a `PATH`-style list).
pub(crate) fn on_path(name: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Checks that the engine answers (`<engine> info`); the error says why not.
fn works(program: &Path, name: &str) -> Result<(), String> {
    let out = Command::new(program)
        .arg("info")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or("").trim().to_string();
    Err(format!(
        "`{name} info` failed ({last}); is the {name} service running?"
    ))
}

/// Picks how raw containers run. `Auto` falls back to processes when no engine works; an engine asked for
/// by name must work.
pub fn detect(choice: ContainerChoice) -> Result<Containers, String> {
    detect_in(choice, &std::env::var_os("PATH").unwrap_or_default())
}

fn detect_in(choice: ContainerChoice, path: &OsStr) -> Result<Containers, String> {
    let wanted: &[&'static str] = match choice {
        ContainerChoice::Process => return Ok(Containers::Process),
        ContainerChoice::Auto => &["docker", "podman"],
        ContainerChoice::Docker => &["docker"],
        ContainerChoice::Podman => &["podman"],
    };
    let mut why = Vec::new();
    for &name in wanted {
        match on_path(name, path) {
            Some(program) => match works(&program, name) {
                Ok(()) => return Ok(Containers::Engine { program, name }),
                Err(e) => why.push(e),
            },
            None => why.push(format!("{name} is not on PATH")),
        }
    }
    match choice {
        ContainerChoice::Auto => Ok(Containers::Process),
        _ => Err(why.join("; ")),
    }
}

/// The engine command line that runs a raw container: inputs mounted read-only at the container's input
/// path, outputs at its output path, the names of the container's variables (`-e NAME`: the engine takes
/// each value from its client's environment, which the caller sets, so no value — a secret's included —
/// shows in the process list), then the image and its rendered command.
pub(crate) fn engine_args(
    name: &str,
    image: &str,
    mounts: &[(&Path, &str, bool)],
    env: &[(String, String)],
    argv: &[String],
) -> Vec<String> {
    let mut args = vec!["run".into(), "--rm".into(), "--name".into(), name.into()];
    for (host, container, read_only) in mounts {
        if container.is_empty() {
            continue;
        }
        let ro = if *read_only { ":ro" } else { "" };
        args.push("-v".into());
        args.push(format!("{}:{container}{ro}", host.display()));
    }
    for (k, _) in env {
        args.push("-e".into());
        args.push(k.clone());
    }
    args.push(image.into());
    args.extend(argv.iter().cloned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_command_lines_mount_both_paths() {
        let args = engine_args(
            "e-n0-0",
            "alpine:3",
            &[
                (Path::new("/s/in"), "/var/inputs", true),
                (Path::new("/s/out"), "/var/outputs", false),
                (Path::new("/s/none"), "", false),
            ],
            &[("A".into(), "secret-value".into())],
            &["sh".into(), "-c".into(), "echo hi".into()],
        );
        assert_eq!(
            args,
            [
                "run",
                "--rm",
                "--name",
                "e-n0-0",
                "-v",
                "/s/in:/var/inputs:ro",
                "-v",
                "/s/out:/var/outputs",
                "-e",
                "A",
                "alpine:3",
                "sh",
                "-c",
                "echo hi"
            ]
        );
    }

    #[test]
    fn named_engines_must_work_and_auto_falls_back() {
        // Not on PATH: a named engine is an error saying so; auto runs processes.
        let empty = OsStr::new("/nonexistent-updraft");
        assert_eq!(
            detect_in(ContainerChoice::Docker, empty),
            Err("docker is not on PATH".to_string())
        );
        assert_eq!(
            detect_in(ContainerChoice::Auto, empty),
            Ok(Containers::Process)
        );
        // On PATH but not answering: the error says what `info` said.
        let dir = std::env::temp_dir().join(format!("updraft-fake-podman-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("podman");
        std::fs::write(&fake, "#!/bin/sh\necho 'cannot connect' >&2\nexit 125\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = detect_in(ContainerChoice::Podman, dir.as_os_str()).unwrap_err();
        assert!(
            err.contains("`podman info` failed (cannot connect)"),
            "{err}"
        );
        assert_eq!(
            detect_in(ContainerChoice::Auto, dir.as_os_str()),
            Ok(Containers::Process)
        );
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(detect(ContainerChoice::Process), Ok(Containers::Process));
    }
}
