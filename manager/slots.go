package manager

import "sync"

// slots is the global `concurrent` bound: a counting semaphore whose size can change on reload.
// Releasing a slot wakes every worker waiting for one.
type slots struct {
	mu       sync.Mutex
	size     int
	used     int
	released chan struct{}
}

func newSlots(size int) *slots {
	return &slots{size: size, released: make(chan struct{})}
}

// tryAcquire takes a slot when one is free.
func (s *slots) tryAcquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used >= s.size {
		return false
	}
	s.used++
	return true
}

func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.used--
	s.broadcast()
}

// setSize changes the bound; running jobs above a smaller bound keep their slots until they end.
func (s *slots) setSize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.size = n
	s.broadcast()
}

// changed returns a channel that is closed the next time a slot is released or the size changes.
// Callers take it before trying to acquire, so no release between the two is missed.
func (s *slots) changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.released
}

func (s *slots) broadcast() {
	close(s.released)
	s.released = make(chan struct{})
}
