// Keeps keel_test_support non-empty before any helper file exists.
