package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/slm-mesh/slm-mesh/jobs"
)

// Errors of the submitter; the messages carry the detail.
var (
	// ErrUnreachable: no Nomad agent answers at the configured address.
	ErrUnreachable = errors.New("no Nomad agent reachable")
	// ErrACLDenied: Nomad refused the request for lack of ACL permissions.
	ErrACLDenied = errors.New("permission denied by Nomad ACLs")
	// ErrParse: the Nomad server could not parse a rendered job.
	ErrParse = errors.New("Nomad could not parse the job")
	// ErrMissingSecret: a job's Nomad Variable lacks an RPC token it
	// needs, or the two ends of a hop hold different tokens.
	ErrMissingSecret = errors.New("the jobs' secrets in Nomad Variables are incomplete")
	// ErrDeploymentFailed: a deployment failed (and was rolled back when
	// auto_revert could).
	ErrDeploymentFailed = errors.New("deployment failed")
	// ErrDeploymentTimeout: a deployment did not finish in time.
	ErrDeploymentTimeout = errors.New("deployment did not finish in time")
	// ErrInterrupted: the operator stopped the wait (Ctrl-C). The
	// deployment goes on in Nomad.
	ErrInterrupted = errors.New("interrupted")
)

// Submitter talks to one Nomad cluster on behalf of the commands.
type Submitter struct {
	// Purge makes Stop remove the jobs from Nomad's state as well.
	Purge bool
	// Timeout bounds Run's wait for all deployments.
	Timeout time.Duration
	// Poll is the least time between two reads of an evaluation or a
	// deployment. The reads are blocking queries that return when the
	// object changes; Poll only matters when the server answers without
	// blocking.
	Poll time.Duration
	// Scale names the task groups whose count the operator set on the
	// command line (-var <group>_count=N). Every other group of a running
	// job keeps its current count, as `nomad job run -preserve-counts`
	// does, so that a new version does not undo `nomad job scale`.
	Scale map[string]bool

	client *api.Client
	addr   string
	out    io.Writer
}

// New returns a Submitter for the Nomad API described by cfg, printing to
// out. It does not contact Nomad.
func New(cfg *api.Config, out io.Writer) (*Submitter, error) {
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("nomad client for %s: %w", cfg.Address, err)
	}
	return &Submitter{Timeout: 30 * time.Minute, Poll: 2 * time.Second, client: client, addr: cfg.Address, out: out}, nil
}

func (s *Submitter) printf(format string, args ...any) {
	fmt.Fprintf(s.out, format, args...)
}

// explain turns an error of the Nomad API into one that says what to do.
// what names the request ("register slm-gateway").
func (s *Submitter) explain(err error, what string) error {
	if err == nil {
		return nil
	}
	var resp api.UnexpectedResponseError
	if errors.As(err, &resp) && resp.HasStatusCode() {
		body := strings.TrimSpace(resp.Body())
		switch resp.StatusCode() {
		case http.StatusForbidden, http.StatusUnauthorized:
			return fmt.Errorf("%w: %s at %s: %s (set NOMAD_TOKEN to a token whose policy allows it)", ErrACLDenied, what, s.addr, body)
		default:
			return fmt.Errorf("%s at %s: HTTP %d: %s", what, s.addr, resp.StatusCode(), body)
		}
	}
	var urlErr *url.Error
	var netErr *net.OpError
	if errors.As(err, &urlErr) || errors.As(err, &netErr) {
		return fmt.Errorf("%w at %s (set NOMAD_ADDR or -address): %s: %v", ErrUnreachable, s.addr, what, err)
	}
	return fmt.Errorf("%s at %s: %w", what, s.addr, err)
}

// reachable checks that a Nomad agent answers and has a leader. The status
// endpoint needs no ACL token, so a failure here is about the address.
func (s *Submitter) reachable() error {
	leader, err := s.client.Status().Leader()
	if err != nil {
		return s.explain(err, "read the cluster leader")
	}
	if leader == "" {
		return fmt.Errorf("%w: Nomad at %s has no leader yet", ErrUnreachable, s.addr)
	}
	return nil
}

// parse has the server turn each rendered job into its API form, so that
// the server's own jobspec (its version, its functions) decides.
func (s *Submitter) parse(rendered []*jobs.Rendered) ([]*api.Job, error) {
	out := make([]*api.Job, len(rendered))
	for i, r := range rendered {
		job, err := s.client.Jobs().ParseHCLOpts(&api.JobsParseRequest{
			JobHCL:       string(r.HCL),
			Variables:    string(r.Variables),
			Canonicalize: true,
		})
		if err != nil {
			var resp api.UnexpectedResponseError
			if errors.As(err, &resp) && resp.StatusCode() == http.StatusBadRequest {
				return nil, fmt.Errorf("%w %s (jobs/%s): %s", ErrParse, r.Job.ID, r.Job.File, strings.TrimSpace(resp.Body()))
			}
			return nil, s.explain(err, "parse "+r.Job.ID)
		}
		out[i] = job
	}
	return out, nil
}

// Render prints the rendered jobs; it does not contact Nomad.
func (s *Submitter) Render(_ context.Context, rendered []*jobs.Rendered) error {
	for i, r := range rendered {
		if i > 0 {
			s.printf("\n")
		}
		s.printf("# ---- %s (jobs/%s) ----\n", r.Job.ID, r.Job.File)
		s.out.Write(r.HCL)
	}
	return nil
}

// Plan prints what registering each job would change (Jobs().Plan).
func (s *Submitter) Plan(_ context.Context, rendered []*jobs.Rendered) error {
	if err := s.reachable(); err != nil {
		return err
	}
	parsed, err := s.parse(rendered)
	if err != nil {
		return err
	}
	for i, job := range parsed {
		id := rendered[i].Job.ID
		// The plan API has no preserve-counts option: give the job the
		// running counts that run would keep, so the diff shows no
		// count change that run would not make.
		if _, err := s.keepRunningCounts(job); err != nil {
			return err
		}
		plan, _, err := s.client.Jobs().Plan(job, true, nil)
		if err != nil {
			return s.explain(err, "plan "+id)
		}
		kind := "None"
		if plan.Diff != nil {
			kind = plan.Diff.Type
		}
		s.printf("%s %s: %s\n", diffMark(kind), id, kind)
		// A new job's diff is the whole job, which render already shows.
		if plan.Diff != nil && kind != "Added" {
			printDiff(s.out, "  ", plan.Diff.Fields, plan.Diff.Objects)
			for _, tg := range plan.Diff.TaskGroups {
				if tg.Type == "None" {
					continue
				}
				s.printf("  %s group %q\n", diffMark(tg.Type), tg.Name)
				printDiff(s.out, "    ", tg.Fields, tg.Objects)
				for _, t := range tg.Tasks {
					if t.Type == "None" {
						continue
					}
					s.printf("    %s task %q %s\n", diffMark(t.Type), t.Name, strings.Join(t.Annotations, ", "))
					printDiff(s.out, "      ", t.Fields, t.Objects)
				}
			}
		}
		if plan.Annotations != nil {
			for _, group := range slices.Sorted(maps.Keys(plan.Annotations.DesiredTGUpdates)) {
				u := plan.Annotations.DesiredTGUpdates[group]
				s.printf("  group %s: %d to place, %d canary, %d in-place, %d destructive, %d to stop, %d unchanged\n",
					group, u.Place, u.Canary, u.InPlaceUpdate, u.DestructiveUpdate, u.Stop, u.Ignore)
			}
		}
		printPlacementFailures(s.out, "  ", plan.FailedTGAllocs)
		if plan.Warnings != "" {
			s.printf("  warnings: %s\n", strings.TrimSpace(plan.Warnings))
		}
	}
	return nil
}

func diffMark(kind string) string {
	switch kind {
	case "Added":
		return "+"
	case "Deleted":
		return "-"
	case "Edited":
		return "~"
	}
	return " "
}

// printDiff prints the changed fields and objects of a plan diff.
func printDiff(w io.Writer, indent string, fields []*api.FieldDiff, objects []*api.ObjectDiff) {
	for _, f := range fields {
		if f.Type == "None" {
			continue
		}
		fmt.Fprintf(w, "%s%s %s: %q => %q\n", indent, diffMark(f.Type), f.Name, f.Old, f.New)
	}
	for _, o := range objects {
		if o.Type == "None" {
			continue
		}
		fmt.Fprintf(w, "%s%s %s {\n", indent, diffMark(o.Type), o.Name)
		printDiff(w, indent+"  ", o.Fields, o.Objects)
		fmt.Fprintf(w, "%s}\n", indent)
	}
}

// printPlacementFailures says why the scheduler could not place groups:
// most often no node has the slm_role meta the constraint asks for.
func printPlacementFailures(w io.Writer, indent string, failed map[string]*api.AllocationMetric) {
	for _, group := range slices.Sorted(maps.Keys(failed)) {
		m := failed[group]
		fmt.Fprintf(w, "%sgroup %s cannot be placed: %d nodes evaluated, %d filtered, %d exhausted\n",
			indent, group, m.NodesEvaluated, m.NodesFiltered, m.NodesExhausted)
		for _, c := range slices.Sorted(maps.Keys(m.ConstraintFiltered)) {
			fmt.Fprintf(w, "%s  constraint %s filtered %d nodes\n", indent, c, m.ConstraintFiltered[c])
		}
		for _, d := range slices.Sorted(maps.Keys(m.DimensionExhausted)) {
			fmt.Fprintf(w, "%s  %s exhausted on %d nodes\n", indent, d, m.DimensionExhausted[d])
		}
	}
}

// preserveCounts says whether registering job keeps the counts of its
// running groups: yes unless the operator set one of them with -var.
func (s *Submitter) preserveCounts(job *api.Job) bool {
	for _, tg := range job.TaskGroups {
		if tg.Name != nil && s.Scale[*tg.Name] {
			return false
		}
	}
	return true
}

// keepRunningCounts sets the count of each of job's groups that the
// operator did not scale with -var (Scale) to that of the running job, as
// run keeps them: with PreserveCounts when no group is scaled
// (preserveCounts), and by these counts alone when one is, since Nomad's
// PreserveCounts keeps all of a job's counts or none. It reports whether
// there was a running job to keep counts from: a new or stopped job starts
// with its own counts, and so does a group new to the job (a model added).
func (s *Submitter) keepRunningCounts(job *api.Job) (bool, error) {
	running, _, err := s.client.Jobs().Info(*job.ID, nil)
	if notFound(err) {
		return false, nil
	}
	if err != nil {
		return false, s.explain(err, "read job "+*job.ID)
	}
	if running.Stop != nil && *running.Stop {
		return false, nil // a stopped job starts again with the job's counts
	}
	kept := false
	for _, tg := range job.TaskGroups {
		if tg.Name == nil || s.Scale[*tg.Name] {
			continue
		}
		for _, cur := range running.TaskGroups {
			if cur.Name != nil && *tg.Name == *cur.Name && cur.Count != nil {
				tg.Count = new(*cur.Count)
				kept = true
			}
		}
	}
	return kept, nil
}

// checkSecrets makes sure each job's Nomad Variable (its secrets_var)
// holds the items the job needs, and that the two tiers of each hop hold
// the same token: otherwise every task would wait for its variable until
// its deployment failed, or the hop would refuse every call, which are
// slow ways to learn it.
func (s *Submitter) checkSecrets(rendered []*jobs.Rendered) error {
	held := map[string]map[string]string{} // item → path → value
	for _, r := range rendered {
		path := r.String("secrets_var")
		if path == "" {
			continue
		}
		v, _, err := s.client.Variables().Peek(path, nil)
		if err != nil {
			var resp api.UnexpectedResponseError
			if errors.As(err, &resp) && resp.StatusCode() == http.StatusForbidden {
				s.printf("note: cannot read Nomad Variable %s with this token; not checking %s's secrets\n", path, r.Job.ID)
				continue
			}
			return s.explain(err, "read Nomad Variable "+path)
		}
		items := r.Job.Secrets
		if r.Bool("rpc_tls") {
			items = append(slices.Clip(items), r.Job.TLSSecrets...)
		}
		for _, item := range items {
			if v == nil || v.Items[item] == "" {
				return fmt.Errorf("%w: Nomad Variable %s has no item %s; create the jobs' secrets first (README, \"Try it on a local Nomad\")",
					ErrMissingSecret, path, item)
			}
			if held[item] == nil {
				held[item] = map[string]string{}
			}
			for other, value := range held[item] {
				if value != v.Items[item] {
					return fmt.Errorf("%w: item %s differs between Nomad Variables %s and %s: the hop it opens would refuse every call",
						ErrMissingSecret, item, other, path)
				}
			}
			held[item][path] = v.Items[item]
		}
	}
	return nil
}

// Run registers the jobs in order and waits until each deployment is
// healthy before registering the next.
func (s *Submitter) Run(ctx context.Context, rendered []*jobs.Rendered) error {
	if err := s.reachable(); err != nil {
		return err
	}
	// Parse everything first: a mistake in the last job should not leave the
	// first one half rolled out.
	parsed, err := s.parse(rendered)
	if err != nil {
		return err
	}
	if err := s.checkSecrets(rendered); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, s.Timeout, ErrDeploymentTimeout)
	defer cancel()
	for i, job := range parsed {
		r := rendered[i]
		preserve := s.preserveCounts(job)
		// PreserveCounts has the server keep the counts; reading them here
		// as well tells the operator which counts the version runs with.
		kept, err := s.keepRunningCounts(job)
		if err != nil {
			return err
		}
		resp, _, err := s.client.Jobs().RegisterOpts(job, &api.RegisterOptions{
			PreserveCounts: preserve,
			Submission:     &api.JobSubmission{Source: string(r.HCL), Format: "hcl2", Variables: string(r.Variables)},
		}, (&api.WriteOptions{}).WithContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return s.stopped(ctx, r.Job.ID, "registering")
			}
			return s.explain(err, "register "+r.Job.ID)
		}
		note := ", count from -var"
		switch {
		case kept && preserve:
			note = ", running count kept"
		case kept:
			note = ", count from -var, other groups' running counts kept"
		case preserve:
			note = ", new job: count from the job's variables"
		}
		s.printf("==> %s registered (evaluation %s%s)\n", r.Job.ID, short(resp.EvalID), note)
		if w := strings.TrimSpace(resp.Warnings); w != "" {
			s.printf("    warnings: %s\n", w)
		}
		if err := s.await(ctx, r.Job.ID, resp.EvalID); err != nil {
			return err
		}
	}
	s.printf("==> all %d jobs are deployed and healthy\n", len(parsed))
	return nil
}

// await waits for the evaluation of a registration, then for the
// deployment it started. Both are watched with Nomad's blocking queries:
// each read returns when the object changes (or after watchWait), and
// ctx ends a read in flight.
func (s *Submitter) await(ctx context.Context, jobID, evalID string) error {
	var eval *api.Evaluation
	var index uint64
	for {
		e, meta, err := s.client.Evaluations().Info(evalID, s.watch(ctx, index))
		if ctx.Err() != nil {
			return s.stopped(ctx, jobID, "waiting for evaluation "+short(evalID))
		}
		if err != nil {
			return s.explain(err, "read evaluation of "+jobID)
		}
		if e.Status != "pending" {
			eval = e
			break
		}
		if index = s.next(ctx, index, meta); ctx.Err() != nil {
			return s.stopped(ctx, jobID, "waiting for evaluation "+short(evalID))
		}
	}
	if len(eval.FailedTGAllocs) > 0 {
		s.printf("    %s: some allocations cannot be placed yet; Nomad keeps trying while the deployment waits\n", jobID)
		printPlacementFailures(s.out, "    ", eval.FailedTGAllocs)
	}

	deploymentID := eval.DeploymentID
	if deploymentID == "" {
		// An unchanged job starts no deployment; report the latest one.
		d, _, err := s.client.Jobs().LatestDeployment(jobID, (&api.QueryOptions{}).WithContext(ctx))
		if ctx.Err() != nil {
			return s.stopped(ctx, jobID, "reading its latest deployment")
		}
		if err != nil {
			return s.explain(err, "read latest deployment of "+jobID)
		}
		if d == nil {
			s.printf("    %s: no deployment to wait for\n", jobID)
			return nil
		}
		deploymentID = d.ID
	}

	last, state := "", "running"
	index = 0
	for {
		d, meta, err := s.client.Deployments().Info(deploymentID, s.watch(ctx, index))
		if ctx.Err() != nil {
			return s.deploymentStopped(ctx, jobID, deploymentID, state)
		}
		if err != nil {
			return s.explain(err, "read deployment of "+jobID)
		}
		if line := progress(d); line != last {
			s.printf("    %s\n", line)
			last = line
		}
		state = fmt.Sprintf("%s (%s)", d.Status, d.StatusDescription)
		switch d.Status {
		case api.DeploymentStatusSuccessful:
			s.printf("==> %s healthy\n", jobID)
			return nil
		case api.DeploymentStatusFailed, api.DeploymentStatusCancelled:
			s.printFailing(ctx, deploymentID, false)
			return fmt.Errorf("%w: %s: %s", ErrDeploymentFailed, jobID, d.StatusDescription)
		}
		if index = s.next(ctx, index, meta); ctx.Err() != nil {
			return s.deploymentStopped(ctx, jobID, deploymentID, state)
		}
	}
}

// deploymentStopped is the error for a deployment wait that ctx ended. On
// the timeout it first shows the allocations that are not healthy yet; on
// Ctrl-C the operator wants the prompt back.
func (s *Submitter) deploymentStopped(ctx context.Context, jobID, deploymentID, state string) error {
	if !errors.Is(context.Cause(ctx), ErrDeploymentTimeout) {
		return s.stopped(ctx, jobID, "waiting for deployment "+short(deploymentID))
	}
	s.printFailing(ctx, deploymentID, true)
	return fmt.Errorf("%w: %s: deployment %s is still %s", ErrDeploymentTimeout, jobID, short(deploymentID), state)
}

// watchWait bounds one blocking query; Nomad caps it at 10 minutes.
const watchWait = 5 * time.Minute

// watch returns the options of a blocking query that returns once the
// object's index passes index (index 0: at once).
func (s *Submitter) watch(ctx context.Context, index uint64) *api.QueryOptions {
	return (&api.QueryOptions{WaitIndex: index, WaitTime: watchWait}).WithContext(ctx)
}

// next returns the index to wait on after a read that returned meta. A
// read that came back without the index moving (a server that did not
// block, or a wait that timed out) is followed by a pause of s.Poll, so
// that the loop never spins.
func (s *Submitter) next(ctx context.Context, index uint64, meta *api.QueryMeta) uint64 {
	if meta != nil && meta.LastIndex > index {
		return meta.LastIndex
	}
	t := time.NewTimer(s.Poll)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return index
}

// stopped is the error for a wait that ctx ended: the timeout, or the
// operator's Ctrl-C (the deployment goes on in Nomad either way).
func (s *Submitter) stopped(ctx context.Context, jobID, doing string) error {
	if errors.Is(context.Cause(ctx), ErrDeploymentTimeout) {
		return fmt.Errorf("%w: %s: still %s", ErrDeploymentTimeout, jobID, doing)
	}
	return fmt.Errorf("%w while %s of %s; Nomad carries on (see `go run ./tools/submit status`)", ErrInterrupted, doing, jobID)
}

// progress is one line of a deployment's state, like `nomad job run`
// shows: per group, allocations placed, healthy and unhealthy.
func progress(d *api.Deployment) string {
	var b strings.Builder
	fmt.Fprintf(&b, "deployment %s %s", short(d.ID), d.Status)
	for _, name := range slices.Sorted(maps.Keys(d.TaskGroups)) {
		g := d.TaskGroups[name]
		fmt.Fprintf(&b, "; %s: %d/%d placed, %d healthy, %d unhealthy", name, g.PlacedAllocs, g.DesiredTotal, g.HealthyAllocs, g.UnhealthyAllocs)
		if g.DesiredCanaries > 0 {
			fmt.Fprintf(&b, ", canaries %d/%d", len(g.PlacedCanaries), g.DesiredCanaries)
			if g.Promoted {
				b.WriteString(" promoted")
			}
		}
	}
	return b.String()
}

// printFailing prints the task events and the tail of the stderr of the
// deployment's allocations that failed or are unhealthy (or, with
// unfinished, not yet healthy): the cause is there, not in the
// deployment's status. ctx may have ended already (the timeout); the
// reads here get a short time of their own.
func (s *Submitter) printFailing(ctx context.Context, deploymentID string, unfinished bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), failingReadTimeout)
	defer cancel()
	allocs, _, err := s.client.Deployments().Allocations(deploymentID, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		s.printf("    (cannot list the deployment's allocations: %v)\n", s.explain(err, "list allocations"))
		return
	}
	// A failing allocation is rescheduled again and again during a
	// deployment; the newest ones tell the story.
	slices.SortFunc(allocs, func(a, b *api.AllocationListStub) int { return cmp.Compare(b.CreateTime, a.CreateTime) })
	shown, more := 0, 0
	for _, a := range allocs {
		decided := a.DeploymentStatus != nil && a.DeploymentStatus.Healthy != nil
		healthy := decided && *a.DeploymentStatus.Healthy
		failing := a.ClientStatus == "failed" || (decided && !healthy)
		if !failing && (!unfinished || healthy) {
			continue
		}
		if shown == maxAllocsShown {
			more++
			continue
		}
		shown++
		s.printf("    allocation %s (%s) on %s: %s\n", short(a.ID), a.Name, a.NodeName, a.ClientStatus)
		for _, task := range slices.Sorted(maps.Keys(a.TaskStates)) {
			st := a.TaskStates[task]
			s.printf("      task %s: %s, %d restarts\n", task, st.State, st.Restarts)
			events := st.Events
			if len(events) > 6 {
				events = events[len(events)-6:]
			}
			for _, e := range events {
				msg := e.DisplayMessage
				if msg == "" {
					msg = e.Message
				}
				s.printf("        %s  %-16s %s\n", time.Unix(0, e.Time).UTC().Format(time.RFC3339), e.Type, msg)
			}
			s.printStderr(ctx, a, task)
		}
	}
	if more > 0 {
		s.printf("    (%d older failing allocations not shown)\n", more)
	}
}

// maxAllocsShown bounds the allocations printFailing describes.
const maxAllocsShown = 3

// Bounds of the stderr tail printFailing shows per task.
const (
	stderrTailBytes = 4096
	stderrTailLines = 20
	// failingReadTimeout bounds printFailing's reads, the log reads
	// included: a client node the API cannot reach must not hold the
	// report.
	failingReadTimeout = 15 * time.Second
)

// printStderr prints the last lines of a task's stderr (what `nomad alloc
// logs -stderr -tail` shows), read through the allocation file system API.
func (s *Submitter) printStderr(ctx context.Context, a *api.AllocationListStub, task string) {
	tail, err := s.stderrTail(ctx, &api.Allocation{ID: a.ID, NodeID: a.NodeID}, task)
	switch {
	case err != nil:
		s.printf("        (no stderr: %v)\n", s.explain(err, "read the logs of allocation "+short(a.ID)))
	case len(tail) == 0:
		s.printf("        (stderr is empty)\n")
	default:
		s.printf("        stderr, last lines:\n")
		for _, line := range tail {
			s.printf("        | %s\n", line)
		}
	}
}

// stderrTail returns the last lines of the task's stderr, at most
// stderrTailLines of the last stderrTailBytes bytes.
func (s *Submitter) stderrTail(ctx context.Context, alloc *api.Allocation, task string) ([]string, error) {
	cancel := make(chan struct{})
	defer close(cancel)
	frames, errc := s.client.AllocFS().Logs(alloc, false, task, "stderr", "end", stderrTailBytes, cancel, (&api.QueryOptions{}).WithContext(ctx))
	var buf []byte
	for frames != nil {
		select {
		case f, ok := <-frames:
			if !ok {
				frames = nil
				break
			}
			buf = append(buf, f.Data...)
			if len(buf) > stderrTailBytes {
				buf = buf[len(buf)-stderrTailBytes:]
			}
		case err := <-errc:
			return nil, err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// A read that failed before any frame reports on errc only.
	select {
	case err := <-errc:
		if err != nil {
			return nil, err
		}
	default:
	}
	text := strings.TrimRight(strings.ToValidUTF8(string(buf), "?"), "\n")
	if text == "" {
		return nil, nil
	}
	lines := strings.Split(text, "\n")
	if len(buf) == stderrTailBytes && len(lines) > 1 {
		lines = lines[1:] // the first line is cut
	}
	if len(lines) > stderrTailLines {
		lines = lines[len(lines)-stderrTailLines:]
	}
	return lines, nil
}

// Status prints each job's state, latest deployment and allocations.
func (s *Submitter) Status(_ context.Context, rendered []*jobs.Rendered) error {
	if err := s.reachable(); err != nil {
		return err
	}
	for _, r := range rendered {
		job, _, err := s.client.Jobs().Info(r.Job.ID, nil)
		if notFound(err) {
			s.printf("%s: not registered\n", r.Job.ID)
			continue
		}
		if err != nil {
			return s.explain(err, "read job "+r.Job.ID)
		}
		s.printf("%s: %s, version %d\n", r.Job.ID, deref(job.Status), derefU(job.Version))
		if d, _, err := s.client.Jobs().LatestDeployment(r.Job.ID, nil); err != nil {
			return s.explain(err, "read deployment of "+r.Job.ID)
		} else if d != nil {
			s.printf("  %s: %s\n", progress(d), d.StatusDescription)
		}
		allocs, _, err := s.client.Jobs().Allocations(r.Job.ID, false, nil)
		if err != nil {
			return s.explain(err, "list allocations of "+r.Job.ID)
		}
		for _, a := range allocs {
			if a.ClientStatus == "complete" {
				continue
			}
			health := "health unknown"
			if a.DeploymentStatus != nil && a.DeploymentStatus.Healthy != nil {
				health = map[bool]string{true: "healthy", false: "unhealthy"}[*a.DeploymentStatus.Healthy]
			}
			s.printf("  allocation %s on %s: %s, %s\n", short(a.ID), a.NodeName, a.ClientStatus, health)
		}
	}
	return nil
}

// Stop deregisters the jobs, the public gateway first.
func (s *Submitter) Stop(_ context.Context, rendered []*jobs.Rendered) error {
	if err := s.reachable(); err != nil {
		return err
	}
	for i := len(rendered) - 1; i >= 0; i-- {
		id := rendered[i].Job.ID
		if _, _, err := s.client.Jobs().Info(id, nil); notFound(err) {
			s.printf("%s: not registered\n", id)
			continue
		} else if err != nil {
			return s.explain(err, "read job "+id)
		}
		evalID, _, err := s.client.Jobs().Deregister(id, s.Purge, nil)
		if err != nil {
			return s.explain(err, "stop "+id)
		}
		verb := "stopped"
		if s.Purge {
			verb = "stopped and purged"
		}
		s.printf("%s: %s (evaluation %s)\n", id, verb, short(evalID))
	}
	return nil
}

func notFound(err error) bool {
	var resp api.UnexpectedResponseError
	return errors.As(err, &resp) && resp.StatusCode() == http.StatusNotFound
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func derefU(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}
