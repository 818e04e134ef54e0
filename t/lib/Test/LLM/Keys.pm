package Test::LLM::Keys;

# The plaintext client keys whose digests are in t/lib/keys.txt, and the
# http-level configuration every gateway test starts from.

use strict;
use warnings;

use Cwd ();
use File::Basename ();

our $KEY_FILE = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../../keys.txt');

# account alice, tier small (two keys of one account)
our $ALICE  = 'sk-llm-Y4-4Ri3zip6gBBWf45IsEZxlo1Kv0YU1h4AFDfO4tgM';
our $ALICE2 = 'sk-llm-TMhBy7Avtl9SzAFwB5fwNJYxHJ0jCOqlwJHvGTA1Cks';
# account carol, no tier on the key line: the location's default
our $CAROL  = 'sk-llm-axzOEUUDUmExCU5Gx8a1nHBX3pTIoJzT5tRmgQVa-kk';
# account dave, tier quota
our $DAVE   = 'sk-llm-MENzt96cpYKAu33w4h1WpODBJOqtsWV8znXxWVT89as';
# account eve, expired in 2020
our $EVE    = 'sk-llm-2BRercXuIWMkB_w7gly1Tob4heC0LE_zQydZl-Zj6IA';
# account frank, no tier, expires in 2999
our $FRANK  = 'sk-llm-V3pUw66tdE28Fd-YgRvjp54k0yxviFX3op2YROzAZiM';

# tiers named by keys.txt must exist in every configuration that loads it
our $TIERS = <<"_EOC_";
    llm_zone llm:1m;
    llm_tier small requests=3/m;
    llm_tier quota requests=2/d requests=100/m;
    llm_key_file $KEY_FILE;
_EOC_

1;
