package tpm

// OpenPaths exposes Open's logic over other paths, for testing its errors.
var OpenPaths = openFirst
