package sim

import (
	"strings"
	"testing"
	"time"
)

func TestReadTrace(t *testing.T) {
	jobs, err := ReadTrace(strings.NewReader("arrival_s,duration_s,pipeline\n10,5.5,2\n0.25,60,1\n10,1,3\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Job{
		{Arrival: 250 * time.Millisecond, Duration: time.Minute, Pipeline: "1"},
		{Arrival: 10 * time.Second, Duration: 5500 * time.Millisecond, Pipeline: "2"},
		{Arrival: 10 * time.Second, Duration: time.Second, Pipeline: "3"},
	}
	if len(jobs) != len(want) {
		t.Fatalf("ReadTrace = %+v, want %+v", jobs, want)
	}
	for i := range want {
		if jobs[i] != want[i] {
			t.Errorf("job %d = %+v, want %+v (ordered by arrival, ties in file order)", i, jobs[i], want[i])
		}
	}
}

func TestReadTraceRejects(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", "empty trace"},
		{"header only", "arrival_s,duration_s,pipeline\n", "no jobs"},
		{"wrong header", "arrival,duration,pipeline\n1,2,3\n", `line 1: header is "arrival,duration,pipeline"`},
		{"missing field", "arrival_s,duration_s,pipeline\n1,2,3\n4,5\n", "line 3: 2 fields, want 3"},
		{"extra field", "arrival_s,duration_s,pipeline\n1,2,3,4\n", "line 2: 4 fields, want 3"},
		{"not a number", "arrival_s,duration_s,pipeline\n1,2,3\n1,2,3\n1,2,3\nsoon,2,3\n", `line 5: arrival_s: "soon" is not a number of seconds`},
		{"negative duration", "arrival_s,duration_s,pipeline\n1,-2,3\n", `line 2: duration_s: "-2" must be a finite number of seconds ≥ 0`},
		{"not finite", "arrival_s,duration_s,pipeline\nNaN,2,3\n", "line 2: arrival_s"},
		{"bad quoting", "arrival_s,duration_s,pipeline\n1,2,3\n1,2,\"3\n", "line 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadTrace(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ReadTrace error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
