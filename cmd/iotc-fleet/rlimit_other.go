//go:build !unix

package main

func needsChild(devices int) bool { return devices > 1000 }
