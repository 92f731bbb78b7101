//! Compile-time checks of the attribute macros: every misuse is a spanned, prescriptive error.
//! (Every supported form compiles in `macro_forms.rs`; without pass cases trybuild only checks,
//! never links.)

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
}
