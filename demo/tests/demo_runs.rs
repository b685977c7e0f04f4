//! The README's demo command, run for real: it starts, delivers to every care service,
//! raises alerts from the care plans, prints no national identifier anywhere, and stops
//! cleanly by itself.

use std::process::Command;

#[test]
fn the_demo_delivers_to_every_care_service_and_never_prints_an_identifier() {
    let output = Command::new(env!("CARGO_BIN_EXE_dho-demo"))
        .args([
            "--duration",
            "12",
            "--rate",
            "20",
            "--metrics",
            "127.0.0.1:0",
        ])
        .output()
        .expect("the demo binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for service in ["bergen-home-care", "sentrum-gp", "lung-clinic"] {
        assert!(
            stdout.lines().any(|l| l.contains(&format!("{service}]"))),
            "no delivery printed for {service}:\n{stdout}"
        );
    }
    // Exacerbations leave the patients' care plans: alerts reach the care services.
    assert!(
        stdout.lines().any(|l| l.contains("ALERT ZoneEntered")),
        "no alert printed:\n{stdout}"
    );
    assert!(stdout.contains("stopped cleanly"), "{stdout}");
    // The fleet is deterministic: none of its numbers may appear in any output line.
    let fleet = simulated_fleet_numbers();
    for line in stdout.lines().chain(stderr.lines()) {
        for number in &fleet {
            assert!(
                !line.contains(number.as_str()),
                "identifier in output: {line}"
            );
        }
        assert!(
            !contains_eleven_digit_run(line),
            "11-digit number in output: {line}"
        );
    }
}

fn simulated_fleet_numbers() -> Vec<String> {
    // Same seed and size as the demo's defaults.
    dho_simulator::Fleet::new(2026, 50)
        .patients()
        .iter()
        .map(|p| p.id.value.clone())
        .collect()
}

fn contains_eleven_digit_run(line: &str) -> bool {
    let mut run = 0;
    for c in line.chars() {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        if run == 11 {
            return true;
        }
    }
    false
}
