//! The copilot's library and program: inputs as files, outputs from files, the outcome left at the output
//! prefix, and the command's exit code passed on.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use updraft_copilot::{
    LocalFiles, OutputError, encode_interface, outcome, read_outputs, write_inputs,
};
use updraft_engine::exec::TaskStatus;
use updraft_engine::exec::outcome::{OutputFiles, from_output_files};
use updraft_engine::literal::primitive_lit;
use updraft_proto::Message;
use updraft_proto::core::{LiteralMap, LiteralType, primitive};

use common::{dir, ty, variables};

#[test]
fn inputs_become_files_and_outputs_come_back() {
    let d = dir("lib");
    let inputs = LiteralMap {
        literals: [
            ("x".to_string(), primitive_lit(primitive::Value::Integer(7))),
            (
                "name".to_string(),
                primitive_lit(primitive::Value::StringValue("ada".into())),
            ),
        ]
        .into(),
    };
    write_inputs(&inputs, &d.join("in"), &LocalFiles).unwrap();
    assert_eq!(std::fs::read_to_string(d.join("in/x")).unwrap(), "7");
    assert_eq!(std::fs::read_to_string(d.join("in/name")).unwrap(), "ada");
    let pb = std::fs::read(d.join("in/inputs.pb")).unwrap();
    assert_eq!(LiteralMap::decode(&pb[..]).unwrap(), inputs);

    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let types: BTreeMap<String, LiteralType> = [
        ("y".to_string(), ty("float")),
        ("ok".to_string(), ty("bool")),
    ]
    .into();
    assert_eq!(
        read_outputs(&out, &types, None, &LocalFiles).unwrap(),
        Err(OutputError::Missing("ok".into()))
    );
    std::fs::write(out.join("y"), "2.5\n").unwrap();
    std::fs::write(out.join("ok"), "maybe").unwrap();
    assert!(matches!(
        read_outputs(&out, &types, None, &LocalFiles).unwrap(),
        Err(OutputError::Bad { name, .. }) if name == "ok"
    ));
    std::fs::write(out.join("ok"), "true").unwrap();
    let got = read_outputs(&out, &types, None, &LocalFiles)
        .unwrap()
        .unwrap();
    assert_eq!(
        got.literals["y"],
        primitive_lit(primitive::Value::FloatValue(2.5))
    );
    // A failing command's exit code wins over files it left; `_ERROR` wins over both.
    let s = outcome(&out, &types, None, &LocalFiles, Some(3), "boom").unwrap();
    assert!(
        matches!(s, TaskStatus::Failed { ref code, .. } if code == "ExitCode"),
        "{s:?}"
    );
    std::fs::write(out.join("_ERROR"), "no luck\n").unwrap();
    let s = outcome(&out, &types, None, &LocalFiles, Some(0), "").unwrap();
    assert!(
        matches!(s, TaskStatus::Failed { ref code, ref message, recoverable: true, .. } if code == "ContainerError" && message == "no luck"),
        "{s:?}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

fn copilot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_updraft-copilot"))
}

#[test]
fn the_program_downloads_runs_and_leaves_the_outcome() {
    let d = dir("bin");
    let inputs = LiteralMap {
        literals: [("x".to_string(), primitive_lit(primitive::Value::Integer(6)))].into(),
    };
    std::fs::write(d.join("inputs.pb"), inputs.encode_to_vec()).unwrap();
    let (input_dir, install, out_dir, prefix) =
        (d.join("in"), d.join("bin"), d.join("out"), d.join("prefix"));
    let st = copilot()
        .args(["download", "--inputs"])
        .arg(d.join("inputs.pb"))
        .arg("--to")
        .arg(&input_dir)
        .arg("--install")
        .arg(&install)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read_to_string(input_dir.join("x")).unwrap(), "6");
    let installed = install.join("updraft-copilot");
    assert!(installed.is_file());

    let iface = encode_interface(&variables(&[("y", "int")]));
    let run = |script: &str| {
        let _ = std::fs::remove_dir_all(&prefix);
        let _ = std::fs::remove_dir_all(&out_dir);
        Command::new(&installed)
            .args(["run", "--output-prefix"])
            .arg(&prefix)
            .arg("--raw-output-prefix")
            .arg(d.join("raw"))
            .arg("--from")
            .arg(&out_dir)
            .args(["--interface", &iface, "--", "sh", "-c", script, "sh"])
            .arg(&input_dir)
            .arg(&out_dir)
            .status()
            .unwrap()
    };
    let outcome_at =
        |p: &PathBuf| from_output_files(&OutputFiles::read_with(|f| std::fs::read(p.join(f)).ok()));
    // Success: outputs.pb with the value the command wrote.
    let st = run(r#"echo $(( $(cat "$1/x") * 7 )) > "$2/y""#);
    assert_eq!(st.code(), Some(0));
    match outcome_at(&prefix) {
        Some(TaskStatus::Succeeded { outputs, .. }) => assert_eq!(
            outputs.literals["y"],
            primitive_lit(primitive::Value::Integer(42))
        ),
        other => panic!("{other:?}"),
    }
    // A failing command: its exit code, and no file (the pod's status tells).
    let st = run("exit 5");
    assert_eq!(st.code(), Some(5));
    assert!(outcome_at(&prefix).is_none());
    // Unusable outputs: error.pb, exit code 1.
    let st = run(r#"echo seven > "$2/y""#);
    assert_eq!(st.code(), Some(1));
    assert!(matches!(
        outcome_at(&prefix),
        Some(TaskStatus::Failed { code, recoverable: false, .. }) if code == "BadOutput"
    ));
    // Bad usage is refused with a message.
    let out = copilot()
        .args(["run", "--interface", "%%%", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--interface"));
    let _ = std::fs::remove_dir_all(&d);
}
