//! `updraft-copilot`: the data side of a raw container's pod.
//!
//! - `updraft-copilot download --inputs URI --to DIR [--install DIR]`: writes the inputs into DIR (the
//!   container's input folder) and copies this program into the install folder (a volume the task's
//!   container shares), so that it can run there.
//! - `updraft-copilot run --output-prefix URI --raw-output-prefix URI --from DIR --interface B64 -- CMD…`:
//!   runs CMD as it is, then leaves `outputs.pb` (or `error.pb`) at the output prefix from the files in DIR,
//!   and exits with CMD's exit code (1 when its outputs are unusable).
//!
//! The runtime may pass the inputs in the environment (`UPDRAFT_INPUTS`, base64: `download` then reads
//! no file) and an end signal (`UPDRAFT_END_SIGNAL`: `run` sends it to its queue once the outcome is
//! stored; see `updraft_copilot::signal`).
//!
//! URIs are `s3://bucket/key` (S3, configured from the environment as the AWS SDKs are; see
//! `updraft_copilot::s3`) or local paths.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use updraft_copilot::s3::Data;
use updraft_copilot::{decode_interface, outcome, read_inputs, write_inputs, write_outcome};
use updraft_engine::exec::TaskStatus;
use updraft_proto::Message;

const USAGE: &str = "usage:
  updraft-copilot download --inputs URI --to DIR [--install DIR]
  updraft-copilot run --output-prefix URI --raw-output-prefix URI --from DIR --interface B64 -- CMD [ARG…]

URIs are s3://bucket/key or local paths. S3 is reached as the AWS SDKs reach it (AWS_REGION,
AWS_ENDPOINT_URL, credentials from the environment, web identity, pod identity or instance metadata);
FLYTE_AWS_ENDPOINT and FLYTE_AWS_ACCESS_KEY_ID/FLYTE_AWS_SECRET_ACCESS_KEY stand in when those are unset.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("updraft-copilot: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--name value` pairs.
type Options = Vec<(String, String)>;

/// Options before `--`, and what follows it.
fn options(args: &[String]) -> Result<(Options, Vec<String>), String> {
    let mut opts = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            return Ok((opts, it.cloned().collect()));
        }
        let Some(name) = a.strip_prefix("--") else {
            return Err(format!("unexpected argument `{a}`\n{USAGE}"));
        };
        let value = it
            .next()
            .ok_or_else(|| format!("--{name} needs a value\n{USAGE}"))?;
        opts.push((name.to_string(), value.clone()));
    }
    Ok((opts, Vec::new()))
}

fn get<'a>(opts: &'a [(String, String)], name: &str) -> Result<&'a str, String> {
    opts.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| format!("--{name} is required\n{USAGE}"))
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let Some((verb, rest)) = args.split_first() else {
        return Err(USAGE.into());
    };
    let (opts, command) = options(rest)?;
    let known: &[&str] = match verb.as_str() {
        "download" => &["inputs", "to", "install"],
        "run" => &["output-prefix", "raw-output-prefix", "from", "interface"],
        "--help" | "-h" | "help" => {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        other => return Err(format!("unknown command `{other}`\n{USAGE}")),
    };
    if let Some((k, _)) = opts.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return Err(format!("{verb}: unknown option --{k}\n{USAGE}"));
    }
    let data = Data::default();
    if verb == "download" {
        // Inputs the runtime put in the environment stand in for the file.
        let inputs = match updraft_copilot::signal::inline_inputs().map_err(|e| e.to_string())? {
            Some(inputs) => inputs,
            None => read_inputs(get(&opts, "inputs")?, &data).map_err(|e| e.to_string())?,
        };
        let to = PathBuf::from(get(&opts, "to")?);
        write_inputs(&inputs, &to, &data).map_err(|e| e.to_string())?;
        eprintln!(
            "updraft-copilot: {} input(s) written to {}",
            inputs.literals.len(),
            to.display()
        );
        if let Ok(dir) = get(&opts, "install") {
            let me = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let to = dir.join("updraft-copilot");
            std::fs::copy(&me, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let outputs = decode_interface(get(&opts, "interface")?).map_err(|e| e.to_string())?;
    let prefix = get(&opts, "output-prefix")?;
    let raw = get(&opts, "raw-output-prefix")?;
    let from = PathBuf::from(get(&opts, "from")?);
    let Some((program, program_args)) = command.split_first() else {
        return Err(format!("run: the command follows `--`\n{USAGE}"));
    };
    std::fs::create_dir_all(&from).map_err(|e| format!("{}: {e}", from.display()))?;
    let status = Command::new(program)
        .args(program_args)
        .env_remove(updraft_copilot::signal::SIGNAL_VAR)
        .status()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    let code = status.code();
    let result = outcome(
        &from,
        &outputs,
        Some(raw),
        &data,
        code,
        "see the container's log",
    )
    .map_err(|e| e.to_string())?;
    // A command that failed without saying why leaves no error.pb: its exit code tells.
    let reported = !matches!(&result, TaskStatus::Failed { code, .. } if code == "ExitCode");
    if reported {
        write_outcome(&result, prefix, &data).map_err(|e| e.to_string())?;
    }
    // The runtime hears of the end now rather than at its next check, and of a success's outputs
    // with it (when they are small), as stored.
    let stored = match &result {
        TaskStatus::Succeeded { outputs, .. } if reported => Some(outputs.encode_to_vec()),
        _ => None,
    };
    if let Ok(json) = std::env::var(updraft_copilot::signal::SIGNAL_VAR)
        && let Err(e) = updraft_copilot::signal::send(&json, stored.as_deref())
    {
        eprintln!(
            "updraft-copilot: could not tell the runtime that the task ended ({e}); it will see \
             the end at its next check"
        );
    }
    Ok(match (code, &result) {
        (Some(0), TaskStatus::Succeeded { .. }) => ExitCode::SUCCESS,
        (Some(c), _) if c != 0 => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        (None, _) => ExitCode::from(137),
        _ => ExitCode::from(1),
    })
}
