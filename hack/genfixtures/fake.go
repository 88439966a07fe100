package main

import "errors"

func writeFake(out string) error { return errors.New("fake fixtures: pending") }
