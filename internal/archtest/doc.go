// Package archtest holds the test that enforces the import rules of the
// hexagon (see DESIGN.md): domain imports the standard library only; ports
// imports domain only; app imports domain and ports only; adapters never
// import app, another adapter (except through adapters/internal), the
// emulator or programs; the emulator never imports app or an adapter.
package archtest
