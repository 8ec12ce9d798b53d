//! The shipped `backstop` does not link the test bed: only `backstop-local` does. Rust keeps a
//! crate's name in the symbols of the code it links, so the test bed's name in a binary's
//! bytes means its code is in there.

const TESTBED: &[u8] = b"backstop_testbed";

fn links_testbed(binary: &str) -> bool {
    let bytes = std::fs::read(binary).unwrap_or_else(|e| panic!("{binary}: {e}"));
    bytes.windows(TESTBED.len()).any(|w| w == TESTBED)
}

#[test]
fn the_shipped_cli_does_not_link_the_test_bed_and_the_local_default_does() {
    assert!(
        !links_testbed(env!("CARGO_BIN_EXE_backstop")),
        "backstop links the test bed"
    );
    // The check can fail: the binary that does use the test bed is seen to.
    assert!(links_testbed(env!("CARGO_BIN_EXE_backstop-local")));
}
