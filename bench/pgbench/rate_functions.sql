-- One call of pgcoord.rate_acquire on the one hot key of the run, with the run's rate
-- and burst (:per_second, :burst): one statement, one transaction. Granted: '0 seconds'.
SELECT pgcoord.rate_acquire(p_key => 'hot', p_per_second => :per_second, p_burst => :burst);
