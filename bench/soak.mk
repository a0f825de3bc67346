# make soak [SOAK_MINUTES=2]: bitnetd with 2 workers under concurrent clients for the given
# minutes, one worker SIGKILLed every 30-60 s; checks every job's output against references,
# that no job is left behind, and that bitnetd's RSS and open fds do not grow. Ends with a
# PASS/FAIL verdict (non-zero exit on FAIL); the report is also in build/soak/report.txt.
SOAK_MINUTES ?= 2
.PHONY: soak
soak: deps
	@$(MAKE) --no-print-directory $(B)/bitnetctl $(B)/bitnetd $(B)/bitnet-worker
	@SOAK_MINUTES=$(SOAK_MINUTES) bench/soak.sh
