// SPDX-License-Identifier: MIT
// Go peer of the fibers benchmark suite (impl "go"), GOMAXPROCS=1 except
// where a row says otherwise.
//
//	spawn_join  ns per `go f()` plus a channel hand-off back to the spawner
//	yield       ns per hop: two goroutines calling runtime.Gosched()
//	idle_rss_*  bytes of RSS per goroutine blocked on a channel after
//	            touching 512 bytes of its stack
//	skynet_1m   ms for the classic skynet (channels, 10 children per node);
//	            also prints skynet_1m_peak_rss (VmHWM)
//	skynet_1m_chan  the same program under the name of our channel-shaped
//	            row (Go has only this shape: a goroutine cannot be joined)
//	spawn_alive_1m  ms to start n goroutines that all wait on one
//	            sync.WaitGroup, release them and wait for all to finish;
//	            also prints spawn_alive_1m_peak_rss and _idle_rss
//	chan_unbuffered  ns per message: two goroutines ping-pong an int64
//	            through two unbuffered channels
//	chan_buffered    ns per message: producer -> consumer, chan of 64
//	mutex_handoff    ns per lock: two goroutines loop Lock / Gosched /
//	            Unlock on one sync.Mutex
//	select4     ns per (send + select): one goroutine sends on one of 4
//	            1-slot channels in turn, then selects over all 4
//	skynet_1m_2w, chan_unbuffered_2w, fanout_2w, fanout_2w_buf,
//	idle_cpu_2w  with GOMAXPROCS=2, beside our rows on two workers: the
//	            skynet tree, the ping-pong, a producer -> 4 stages ->
//	            collector pipeline (unbuffered; 64 slots), and the CPU
//	            used while every goroutine waits
//
// Usage: bench_go <bench> <n>; prints one BENCH line like the C programs.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func report(bench string, value float64, unit string, n int64, note string) {
	m := map[string]interface{}{"bench": bench, "impl": "go", "value": value,
		"unit": unit, "n": n}
	if note != "" {
		m["note"] = note
	}
	b, _ := json.Marshal(m)
	fmt.Printf("BENCH %s\n", b)
}

func rssBytes() int64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(data))
	res, _ := strconv.ParseInt(f[1], 10, 64)
	return res * int64(os.Getpagesize())
}

func statusBytes(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, field+":") {
			kb, _ := strconv.ParseInt(strings.Fields(line[len(field)+1:])[0], 10, 64)
			return kb * 1024
		}
	}
	return -1
}

func spawnJoinLoop(n int64) {
	ch := make(chan struct{})
	for i := int64(0); i < n; i++ {
		go func() { ch <- struct{}{} }()
		<-ch
	}
}

func benchSpawnJoin(n int64) {
	spawnJoinLoop(n/10 + 1)
	t0 := time.Now()
	spawnJoinLoop(n)
	report("spawn_join", float64(time.Since(t0).Nanoseconds())/float64(n), "ns", n, "")
}

func runYield(perG int64) time.Duration {
	var wg sync.WaitGroup
	wg.Add(2)
	t0 := time.Now()
	for g := 0; g < 2; g++ {
		go func() {
			for i := int64(0); i < perG; i++ {
				runtime.Gosched()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	return time.Since(t0)
}

func benchYield(n int64) {
	perG := n / 2
	if perG < 1 {
		perG = 1
	}
	runYield(perG/10 + 1)
	d := runYield(perG)
	report("yield", float64(d.Nanoseconds())/float64(2*perG), "ns", 2*perG, "")
}

//go:noinline
func touch(b []byte) {
	for i := 0; i < len(b); i += 64 {
		b[i] = byte(i)
	}
	b[len(b)-1] = 1
}

func idleBody(ready *sync.WaitGroup, gate chan struct{}) {
	var buf [512]byte
	touch(buf[:])
	ready.Done()
	<-gate
	buf[0]++
}

func benchIdle(name string, n int64) {
	var ready sync.WaitGroup
	gate := make(chan struct{})
	runtime.GC()
	before := rssBytes()
	ready.Add(int(n))
	for i := int64(0); i < n; i++ {
		go idleBody(&ready, gate)
	}
	ready.Wait()
	after := rssBytes()
	report(name, float64(after-before)/float64(n), "bytes", n,
		fmt.Sprintf("%d created; goroutine stacks start at 2 KiB, no guard", n))
	// No teardown: the measurement is done.
	os.Exit(0)
}

func skynet(c chan int64, num, size, div int64) {
	if size == 1 {
		c <- num
		return
	}
	rc := make(chan int64)
	var sum int64
	for i := int64(0); i < div; i++ {
		subNum := num + i*(size/div)
		go skynet(rc, subNum, size/div, div)
	}
	for i := int64(0); i < div; i++ {
		sum += <-rc
	}
	c <- sum
}

func benchSkynet(name string, n int64) {
	leaves := int64(1)
	for leaves < n {
		leaves *= 10
	}
	t0 := time.Now()
	c := make(chan int64)
	go skynet(c, 0, leaves, 10)
	sum := <-c
	d := time.Since(t0)
	if sum != leaves*(leaves-1)/2 {
		fmt.Fprintln(os.Stderr, "bench_go: skynet sum wrong")
		os.Exit(1)
	}
	report(name, float64(d.Nanoseconds())/1e6, "ms", leaves, "")
	report(name+"_peak_rss", float64(statusBytes("VmHWM")), "bytes", leaves,
		"VmHWM of the whole process")
}

// spawn_alive_1m: the shape of bench_fibers.c's. Each goroutine says it is
// there (ready) and waits on the gate, a WaitGroup held at 1; when all n
// are there RSS is read, one gate.Done() wakes all n, and main waits for
// all to finish (done). Timed from the first `go` to the last Done, with
// the idle RSS per goroutine read while all n wait.
func benchSpawnAlive(n int64) {
	var ready, gate, done sync.WaitGroup
	runtime.GC()
	t0 := time.Now()
	before := rssBytes()
	ready.Add(int(n))
	done.Add(int(n))
	gate.Add(1)
	for i := int64(0); i < n; i++ {
		go func() {
			ready.Done()
			gate.Wait()
			done.Done()
		}()
	}
	ready.Wait()
	after := rssBytes()
	gate.Done()
	done.Wait()
	d := time.Since(t0)
	report("spawn_alive_1m", float64(d.Nanoseconds())/1e6, "ms", n,
		"spawn n, all wait on one sync.WaitGroup, release, all finish")
	report("spawn_alive_1m_peak_rss", float64(statusBytes("VmHWM")), "bytes", n,
		"VmHWM of the whole process")
	report("spawn_alive_1m_idle_rss", float64(after-before)/float64(n), "bytes",
		n, "RSS per goroutine with all n waiting (2 KiB stacks, no guard)")
}

func runPingPong(rounds int64) time.Duration {
	a, b := make(chan int64), make(chan int64)
	done := make(chan struct{})
	t0 := time.Now()
	go func() {
		for i := int64(0); i < rounds; i++ {
			v := <-a
			b <- v + 1
		}
		close(done)
	}()
	var v int64
	for i := int64(0); i < rounds; i++ {
		a <- v
		v = <-b
	}
	<-done
	return time.Since(t0)
}

func benchUnbuffered(n int64) {
	rounds := n / 2
	if rounds < 1 {
		rounds = 1
	}
	runPingPong(rounds/10 + 1)
	d := runPingPong(rounds)
	report("chan_unbuffered", float64(d.Nanoseconds())/float64(2*rounds), "ns",
		2*rounds, "unbuffered chan ping-pong, per message")
}

func runStream(n int64) time.Duration {
	ch := make(chan int64, 64)
	done := make(chan struct{})
	t0 := time.Now()
	go func() {
		for i := int64(0); i < n; i++ {
			<-ch
		}
		close(done)
	}()
	for i := int64(0); i < n; i++ {
		ch <- i
	}
	<-done
	return time.Since(t0)
}

func benchBuffered(n int64) {
	runStream(n/10 + 1)
	d := runStream(n)
	report("chan_buffered", float64(d.Nanoseconds())/float64(n), "ns", n,
		"chan of 64, producer -> consumer")
}

func runMutex(per int64) time.Duration {
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(2)
	t0 := time.Now()
	for g := 0; g < 2; g++ {
		go func() {
			for i := int64(0); i < per; i++ {
				mu.Lock()
				runtime.Gosched()
				mu.Unlock()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	return time.Since(t0)
}

func benchMutex(n int64) {
	per := n / 2
	if per < 1 {
		per = 1
	}
	runMutex(per/10 + 1)
	d := runMutex(per)
	report("mutex_handoff", float64(d.Nanoseconds())/float64(2*per), "ns", 2*per,
		"2 goroutines: Lock, Gosched, Unlock on sync.Mutex")
}

func runSelect(n int64) time.Duration {
	var c [4]chan int64
	for i := range c {
		c[i] = make(chan int64, 1)
	}
	t0 := time.Now()
	for i := int64(0); i < n; i++ {
		c[i&3] <- i
		var got int64
		select {
		case got = <-c[0]:
		case got = <-c[1]:
		case got = <-c[2]:
		case got = <-c[3]:
		}
		if got != i {
			fmt.Fprintln(os.Stderr, "bench_go: select got the wrong value")
			os.Exit(1)
		}
	}
	return time.Since(t0)
}

func benchSelect(n int64) {
	runSelect(n/10 + 1)
	d := runSelect(n)
	report("select4", float64(d.Nanoseconds())/float64(n), "ns", n,
		"buffered send + select over 4 receives")
}

// fanout_2w, fanout_2w_buf: bench_fibers.c's pipeline. One producer sends
// 0 .. n-1 into `in`, fanStages goroutines each turn v into 3v + 1 on
// `out`, and the collector (main) sums the n results; unbuffered, or 64
// slots. GOMAXPROCS=2, as ours has two workers.
const fanStages = 4

func runFanout(n int64, capacity int) time.Duration {
	in, out := make(chan int64, capacity), make(chan int64, capacity)
	var passed int64
	var wg sync.WaitGroup
	t0 := time.Now()
	go func() {
		for i := int64(0); i < n; i++ {
			in <- i
		}
		close(in)
	}()
	wg.Add(fanStages)
	for s := 0; s < fanStages; s++ {
		go func() {
			var p int64
			for v := range in {
				out <- 3*v + 1
				p++
			}
			atomic.AddInt64(&passed, p)
			wg.Done()
		}()
	}
	var sum int64
	for i := int64(0); i < n; i++ {
		sum += <-out
	}
	wg.Wait()
	d := time.Since(t0)
	if sum != 3*n*(n-1)/2+n || passed != n {
		fmt.Fprintln(os.Stderr, "bench_go: fanout: wrong sum or count")
		os.Exit(1)
	}
	return d
}

func benchFanout(name string, n int64) {
	capacity := 0
	if name == "fanout_2w_buf" {
		capacity = 64
	}
	runFanout(n/10+1, capacity)
	d := runFanout(n, capacity)
	report(name, float64(d.Nanoseconds())/float64(n), "ns", n,
		fmt.Sprintf("1 producer -> %d stages -> 1 collector, chan of %d, "+
			"GOMAXPROCS=2", fanStages, capacity))
}

// idle_cpu_2w: bench_fibers.c's. With GOMAXPROCS=2: a goroutine in a read
// of a pipe (the netpoller), one in a receive on a channel nobody sends on
// until the end, one waiting for a timer an hour away (or a cancel). CPU
// time (getrusage: user + system) over n ms once all three wait.
func cpuNs() (int64, int64) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano(), ru.Nvcsw
}

func benchIdleCPU(ms int64) {
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench_go: pipe:", err)
		os.Exit(1)
	}
	ch, cancel := make(chan int64), make(chan struct{})
	var waiting int32
	var wg sync.WaitGroup
	var got [1]byte
	var gotN int
	var v int64
	cancelled := false
	wg.Add(3)
	go func() {
		atomic.AddInt32(&waiting, 1)
		gotN, _ = r.Read(got[:])
		wg.Done()
	}()
	go func() {
		atomic.AddInt32(&waiting, 1)
		v = <-ch
		close(cancel)
		wg.Done()
	}()
	go func() {
		atomic.AddInt32(&waiting, 1)
		t := time.NewTimer(time.Hour)
		select {
		case <-t.C:
		case <-cancel:
			cancelled = true
			t.Stop()
		}
		wg.Done()
	}()
	for atomic.LoadInt32(&waiting) < 3 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	c0, v0 := cpuNs()
	t0 := time.Now()
	time.Sleep(time.Duration(ms) * time.Millisecond)
	wall := time.Since(t0)
	c1, v1 := cpuNs()
	ch <- 42
	w.Write([]byte("x"))
	wg.Wait()
	if gotN != 1 || got[0] != 'x' || v != 42 || !cancelled {
		fmt.Fprintln(os.Stderr, "bench_go: idle_cpu_2w: a wait ended wrongly")
		os.Exit(1)
	}
	cpu := float64(c1 - c0)
	note := fmt.Sprintf("GOMAXPROCS=2: a pipe read, a channel receive, an "+
		"hour's timer; %.3f ms CPU in %.0f ms, %d voluntary context switches",
		cpu/1e6, float64(wall.Nanoseconds())/1e6, v1-v0)
	report("idle_cpu_2w", 100*cpu/float64(wall.Nanoseconds()), "%", ms, note)
	report("idle_cpu_2w_ms", cpu/1e6, "ms", ms, note)
}

func main() {
	runtime.GOMAXPROCS(1)
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: bench_go <bench> <n>")
		os.Exit(2)
	}
	n, err := strconv.ParseInt(os.Args[2], 10, 64)
	if err != nil || n <= 0 {
		fmt.Fprintln(os.Stderr, "bad n")
		os.Exit(2)
	}
	switch b := os.Args[1]; b {
	case "spawn_join":
		benchSpawnJoin(n)
	case "yield":
		benchYield(n)
	case "idle_rss_100k", "idle_rss_1m":
		benchIdle(b, n)
	case "skynet_1m", "skynet_1m_chan":
		benchSkynet(b, n)
	case "skynet_1m_2w": // the multi-worker row: two Ps, as we have two workers
		runtime.GOMAXPROCS(2)
		benchSkynet(b, n)
	case "spawn_alive_1m":
		benchSpawnAlive(n)
	case "chan_unbuffered":
		benchUnbuffered(n)
	case "chan_unbuffered_2w": // two Ps, as our row has two workers
		runtime.GOMAXPROCS(2)
		rounds := n / 2
		if rounds < 1 {
			rounds = 1
		}
		runPingPong(rounds/10 + 1)
		d := runPingPong(rounds)
		report(b, float64(d.Nanoseconds())/float64(2*rounds), "ns", 2*rounds,
			"unbuffered chan ping-pong, GOMAXPROCS=2")
	case "fanout_2w", "fanout_2w_buf": // two Ps, as ours has two workers
		runtime.GOMAXPROCS(2)
		benchFanout(b, n)
	case "idle_cpu_2w":
		runtime.GOMAXPROCS(2)
		benchIdleCPU(n)
	case "chan_buffered":
		benchBuffered(n)
	case "mutex_handoff":
		benchMutex(n)
	case "select4":
		benchSelect(n)
	default:
		fmt.Fprintln(os.Stderr, "unknown bench", b)
		os.Exit(2)
	}
}
