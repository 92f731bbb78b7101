//! Compile-time checks of the attribute macros: every misuse is a spanned, prescriptive error,
//! and every supported form compiles.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
