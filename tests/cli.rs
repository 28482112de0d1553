//! The command line: help, version, and clear errors for bad configuration.

use std::process::Command;

fn tidecast(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tidecast"))
        .args(args)
        .env_remove("TIDECAST_CONFIG")
        .output()
        .expect("run tidecast")
}

#[test]
fn help_and_version() {
    let out = tidecast(&["--version"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("tidecast {}", env!("CARGO_PKG_VERSION")));
    let out = tidecast(&["--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("serve"));
    let out = tidecast(&["serve", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--rtmp-listen", "--http-listen", "--data-dir", "TIDECAST_RTMP_LISTEN"] {
        assert!(help.contains(flag), "serve --help mentions {flag}");
    }
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[hls]\npart_seconds = 5.0\n").unwrap();
    let out = tidecast(&["serve", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hls.part_seconds"), "{err}");

    std::fs::write(&path, "[rtmp]\nlisten = 1935\n").unwrap();
    let out = tidecast(&["serve", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml"));

    let out = tidecast(&["serve", "--config", "/nonexistent/tidecast.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tidecast.toml"));
}
