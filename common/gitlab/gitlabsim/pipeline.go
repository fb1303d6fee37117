package gitlabsim

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// Pipeline is a created pipeline: its id and its jobs' ids in definition order.
type Pipeline struct {
	ID     int64
	JobIDs []int64
}

type pipeline struct {
	id      int64
	project *project
	stages  []string
	jobs    []*jobRecord
	ref     string
	sha     string
	single  bool // made by Enqueue: dependencies name jobs anywhere
}

func (p *pipeline) stageIndex(stage string) int { return slices.Index(p.stages, stage) }

func (p *pipeline) jobByName(name string) *jobRecord {
	for _, j := range p.jobs {
		if j.spec.Name == name {
			return j
		}
	}
	return nil
}

// CreatePipeline creates jobs in stage order: the stages are ordered by first appearance; a stage's jobs
// become pending when every job of the earlier stages succeeded, and a stage that did not succeed
// skips every later one. All specs must name the same repository (or none).
func (s *Server) CreatePipeline(specs []JobSpec) (Pipeline, error) {
	var stages []string
	for i := range specs {
		if specs[i].Stage == "" {
			specs[i].Stage = "test"
		}
		if !slices.Contains(stages, specs[i].Stage) {
			stages = append(stages, specs[i].Stage)
		}
	}
	return s.createPipeline(stages, specs)
}

func (s *Server) createPipeline(stages []string, specs []JobSpec) (Pipeline, error) {
	if err := validatePipeline(stages, specs); err != nil {
		return Pipeline{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.newPipelineLocked(s.projectLocked(specs[0].Repo), stages)
	out := Pipeline{ID: p.id}
	for _, spec := range specs {
		out.JobIDs = append(out.JobIDs, s.newJobLocked(p, spec).id)
	}
	s.advancePipelineLocked(p)
	s.notifyLocked()
	return out, nil
}

func validatePipeline(stages []string, specs []JobSpec) error {
	if len(specs) == 0 {
		return errors.New("gitlabsim: a pipeline needs at least one job")
	}
	var errs []error
	seen := map[string]int{}
	for i, spec := range specs {
		switch {
		case spec.Name == "":
			errs = append(errs, fmt.Errorf("job %d: name is empty", i))
		case seen[spec.Name] > 0:
			errs = append(errs, fmt.Errorf("job %q: defined twice", spec.Name))
		}
		seen[spec.Name]++
		if spec.Repo != specs[0].Repo {
			errs = append(errs, fmt.Errorf("job %q: repository %q differs from the pipeline's %q", spec.Name, spec.Repo, specs[0].Repo))
		}
		if !slices.Contains(stages, spec.Stage) {
			errs = append(errs, fmt.Errorf("job %q: stage %q is not in stages %v", spec.Name, spec.Stage, stages))
		}
		if len(spec.Script) == 0 {
			errs = append(errs, fmt.Errorf("job %q: script is empty", spec.Name))
		}
	}
	for _, spec := range specs {
		for _, dep := range spec.Dependencies {
			k := slices.IndexFunc(specs, func(o JobSpec) bool { return o.Name == dep })
			if k < 0 || slices.Index(stages, specs[k].Stage) >= slices.Index(stages, spec.Stage) {
				errs = append(errs, fmt.Errorf("job %q: dependency %q is not a job of an earlier stage", spec.Name, dep))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("gitlabsim: invalid pipeline: %w", err)
	}
	return nil
}

func (s *Server) newPipelineLocked(proj *project, stages []string) *pipeline {
	p := &pipeline{id: s.nextPipelineID, project: proj, stages: stages, ref: defaultBranch, sha: proj.sha}
	s.nextPipelineID++
	if proj.hasRepo() {
		// GitLab keeps refs/pipelines/<id> so that the runner's refspec finds the pipeline's commit.
		// A loose ref is a file holding the SHA.
		ref := filepath.Join(proj.dir, "refs", "pipelines", strconv.FormatInt(p.id, 10))
		err := os.MkdirAll(filepath.Dir(ref), 0o755)
		if err == nil {
			err = os.WriteFile(ref, []byte(p.sha+"\n"), 0o644)
		}
		if err != nil {
			s.log.WithError(err).Error("cannot write the pipeline ref; clones of this pipeline will fail")
		}
	}
	return p
}

// advancePipelineLocked starts the first stage that has not started once all earlier stages succeeded,
// or skips everything after a stage that finished without success.
func (s *Server) advancePipelineLocked(p *pipeline) {
	for _, stage := range p.stages {
		var created, open, failed bool
		for _, j := range p.jobs {
			if j.spec.Stage != stage {
				continue
			}
			switch {
			case j.status == StatusCreated:
				created = true
			case !isFinal(j.status):
				open = true
			case j.status != StatusSuccess:
				failed = true
			}
		}
		switch {
		case open:
			return
		case created && !failed:
			now := time.Now()
			for _, j := range p.jobs {
				if j.spec.Stage == stage && j.status == StatusCreated {
					j.status, j.queuedAt = StatusPending, now
				}
			}
			s.tickQueuesLocked()
			return
		case failed:
			for _, j := range p.jobs {
				if j.status == StatusCreated {
					j.status = StatusSkipped
				}
			}
			return
		}
	}
}

// fakeSHA stands in for a commit in projects without a repository.
func fakeSHA(seed string) string {
	h := sha1.Sum([]byte(seed))
	return hex.EncodeToString(h[:])
}
