// Package forecast learns a runner's demand from its own job arrivals, by hour, and says how many idle
// slots the coming hours need. It is pure: the taskscaler feeds it arrivals, boot delays and the time.
package forecast
