//go:build !race

package storages

const raceEnabled = false
