package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// prompter asks for missing values on stdin. Non-interactive, it reports which flag is missing.
// Reading happens in a goroutine so that an interrupt ends a pending question at once.
type prompter struct {
	ctx         context.Context
	out         io.Writer
	interactive bool
	lines       chan string
	done        chan struct{}
}

func newPrompter(ctx context.Context, in io.Reader, out io.Writer, interactive bool) *prompter {
	p := &prompter{ctx: ctx, out: out, interactive: interactive, lines: make(chan string), done: make(chan struct{})}
	if interactive {
		go func() {
			defer close(p.lines)
			sc := bufio.NewScanner(in)
			for sc.Scan() {
				select {
				case p.lines <- sc.Text():
				case <-p.done:
					return
				}
			}
		}()
	}
	return p
}

// close lets the reading goroutine end.
func (p *prompter) close() { close(p.done) }

var errNoInput = errors.New("standard input ended")

// ask returns value when it is set; otherwise it asks question (showing def, used for an empty answer).
// A required value that stays empty is asked again; non-interactive, it is an error naming flag.
func (p *prompter) ask(question, value, def, flag string, required bool) (string, error) {
	if value != "" {
		return value, nil
	}
	if !p.interactive {
		if required && def == "" {
			return "", fmt.Errorf("%s is required with --non-interactive", flag)
		}
		return def, nil
	}
	for {
		if def != "" {
			fmt.Fprintf(p.out, "%s [%s]: ", question, def)
		} else {
			fmt.Fprintf(p.out, "%s ", question)
		}
		select {
		case <-p.ctx.Done():
			fmt.Fprintln(p.out)
			return "", fmt.Errorf("interrupted: %w", p.ctx.Err())
		case line, ok := <-p.lines:
			if !ok {
				return "", fmt.Errorf("no answer for %s: %w", flag, errNoInput)
			}
			line = strings.TrimSpace(line)
			if line == "" {
				line = def
			}
			if line != "" || !required {
				return line, nil
			}
		}
	}
}
