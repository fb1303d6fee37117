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
		{"field missing under a longer header", "arrival_s,duration_s,pipeline,runner\n1,2,3\n", "line 2: 3 fields, want 4"},
		{"header in another order", "duration_s,arrival_s,pipeline\n1,2,3\n", "line 1: header is"},
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

// TestReadTraceHistory reads the manager's job history as it is written (common/history): extra
// columns are ignored and Unix-second arrivals are rebased to the Monday before the first job.
func TestReadTraceHistory(t *testing.T) {
	in := "arrival_s,duration_s,pipeline,created_at,runner,job_id\n" +
		"1796112000.500,30.000,41,2026-12-01T08:00:00Z,fleet,7\n" +
		"1796112060.000,12.250,\"41\",2026-12-01T08:01:00Z,\"a, b\",8\n"
	jobs, err := ReadTrace(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	rebased, start, ok := Rebase(jobs)
	if !ok {
		t.Fatal("Rebase did not take Unix-second arrivals")
	}
	if want := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC); !start.Equal(want) {
		t.Errorf("start = %s, want the Monday before the first job, %s", start, want)
	}
	if got := start.Add(rebased[0].Arrival); !got.Equal(time.Unix(1796112000, 5e8)) {
		t.Errorf("first job at %s, want %s", got, time.Unix(1796112000, 5e8).UTC())
	}
	if rebased[1].Arrival-rebased[0].Arrival != 59500*time.Millisecond || rebased[1].Duration != 12250*time.Millisecond || rebased[1].Pipeline != "41" {
		t.Errorf("second job = %+v", rebased[1])
	}
	if _, _, ok := Rebase([]Job{{Arrival: time.Hour}}); ok {
		t.Error("Rebase moved a trace counted from its own start")
	}
}

func FuzzReadTrace(f *testing.F) {
	f.Add("arrival_s,duration_s,pipeline\n10,5.5,2\n0.25,60,1\n")
	f.Add("arrival_s,duration_s,pipeline,created_at,runner,job_id\n1796112000.500,30.000,41,2026-12-01T08:00:00Z,fleet,7\n")
	f.Add("arrival_s,duration_s,pipeline\n1,2,\"3\n")
	f.Fuzz(func(t *testing.T, in string) {
		jobs, err := ReadTrace(strings.NewReader(in))
		if err != nil {
			return
		}
		for i, j := range jobs {
			if j.Arrival < 0 || j.Duration < 0 || (i > 0 && j.Arrival < jobs[i-1].Arrival) {
				t.Fatalf("job %d = %+v: negative or out of order", i, j)
			}
		}
		rebased, _, _ := Rebase(jobs)
		for i, j := range rebased {
			if j.Arrival < 0 {
				t.Fatalf("rebased job %d arrives before the start: %+v", i, j)
			}
		}
	})
}
