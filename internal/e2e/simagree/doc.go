// Package simagree checks that the simulator (taskscaler/sim) predicts what the real taskscaler does on
// a real fleet: the same 20-job trace through the simulator and, on the wall clock, through the
// taskscaler over the local plugin's sshd instances.
package simagree
