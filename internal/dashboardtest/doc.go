// Package dashboardtest holds the browser tests of the emulator's web
// dashboard: a real device (this module's SDK over MQTT) against the
// in-process emulator, driven through headless Chromium with chromedp. It
// lives outside emulator/ because the emulator never imports the SDK.
package dashboardtest
